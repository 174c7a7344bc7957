"""`Passwords` computes at most HASHES_AT_ONCE argon2id hashes at once, however many threads ask
(each holds 64 MiB while it runs: see "Memory over a soak" in docs/performance.md), and every
caller still gets its answer."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher

from services.accounts.passwords import HASHES_AT_ONCE, Passwords


class CountingHasher(PasswordHasher):
    """A real argon2id hasher (small parameters) that counts how many of its calls overlap."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.lock = threading.Lock()
        self.running = self.most = 0

    def _counted(self, work):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)  # long enough for the other threads to pile up
            return work()
        finally:
            with self.lock:
                self.running -= 1

    def hash(self, password, *, salt=None):
        return self._counted(lambda: super(CountingHasher, self).hash(password, salt=salt))

    def verify(self, hash, password):
        return self._counted(lambda: super(CountingHasher, self).verify(hash, password))


def test_hashes_and_verifications_take_turns():
    hasher = CountingHasher()
    passwords = Passwords(hasher)
    stored = passwords.hash("kayak-at-dawn-on-a-still-lake")
    hasher.most = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        hashed = list(pool.map(passwords.hash, [f"password-{i}-of-the-burst" for i in range(8)]))
        logins = list(
            pool.map(lambda p: passwords.matches(stored, p), ["kayak-at-dawn-on-a-still-lake", "wrong"] * 4)
        )
    assert hasher.most == HASHES_AT_ONCE
    assert all(hasher.verify(h, f"password-{i}-of-the-burst") for i, h in enumerate(hashed))
    assert logins == [True, False] * 4
