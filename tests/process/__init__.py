"""Tests that drive real ``ipaas serve`` processes over real sockets (items 8, 10, 11, 12)."""
