"""How many connections one listener holds: in all, and from one client address.

Every accepted connection, logged in or not, holds a socket, buffers and a task; without a cap
one client could open them until the process runs out of file descriptors. A listener asks
`admit(ip)` for each accepted connection and calls `leave(ip)` when it ends; a refused one is
closed at once (the realtime and REST listeners answer 503 first).
"""

from __future__ import annotations


class Gate:
    __slots__ = ("_by_ip", "max_per_ip", "max_total", "refused", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.refused = 0  # connections refused so far
        self._by_ip: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """Count a new connection from `ip`; False (counted as refused) if over a cap."""
        held = self._by_ip.get(ip, 0)
        if self.total >= self.max_total or held >= self.max_per_ip:
            self.refused += 1
            return False
        self._by_ip[ip] = held + 1
        self.total += 1
        return True

    def leave(self, ip: str) -> None:
        """An admitted connection from `ip` ended."""
        held = self._by_ip[ip] - 1
        if held:
            self._by_ip[ip] = held
        else:
            del self._by_ip[ip]
        self.total -= 1
