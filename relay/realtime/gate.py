"""How many connections one listener holds: in all, and from one client address.

Every accepted connection, logged in or not, holds a socket, buffers and a task; without a cap
one client could open them until the process runs out of file descriptors. A listener asks
`admit(ip)` for each accepted connection and calls `leave(ip)` when it ends; a refused one is
closed at once (the realtime and REST listeners answer 503 first). A trusted proxy's connection
is admitted with `ip` None (the total only): it carries other clients, and the realtime
listener `claim`s it for its client once the upgrade request says who that is.
"""

from __future__ import annotations


class Gate:
    __slots__ = ("_by_ip", "admitted", "max_per_ip", "max_total", "refused", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0  # open now
        self.admitted = 0  # connections admitted so far
        self.refused = 0  # connections refused so far
        self._by_ip: dict[str, int] = {}

    def admit(self, ip: str | None) -> bool:
        """Count a new connection from `ip`; False (counted as refused) if over a cap.

        `ip` None: a trusted proxy's connection, counted in the total only until `claim`
        names its client (a proxy carries many clients; it is not one address's share)."""
        if self.total >= self.max_total:
            self.refused += 1
            return False
        if ip is not None:
            held = self._by_ip.get(ip, 0)
            if held >= self.max_per_ip:
                self.refused += 1
                return False
            self._by_ip[ip] = held + 1
        self.total += 1
        self.admitted += 1
        return True

    def claim(self, ip: str) -> bool:
        """A connection admitted with `ip` None turned out to be from `ip`: count it against
        that address's cap. False (counted as refused) if over it; then it still holds its
        place in the total until `leave(None)`."""
        held = self._by_ip.get(ip, 0)
        if held >= self.max_per_ip:
            self.refused += 1
            return False
        self._by_ip[ip] = held + 1
        return True

    def leave(self, ip: str | None) -> None:
        """An admitted connection ended: `ip` as admitted, or as claimed since."""
        if ip is not None:
            held = self._by_ip[ip] - 1
            if held:
                self._by_ip[ip] = held
            else:
                del self._by_ip[ip]
        self.total -= 1
