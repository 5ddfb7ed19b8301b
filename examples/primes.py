"""Prime checking, as the workshops do it: which numbers in a range are
prime, by trial division -- pure-Python CPU work, so it belongs on processes.

It runs serially, on processes, on threads and with ``backend="auto"``,
which measures the first numbers on threads, sees that the GIL serialises
them, and sends the rest to processes (``shoal.last_choice()`` says why).

    python examples/primes.py [--start 100000000] [--count 50000] [--workers N]
"""

from __future__ import annotations

import argparse
import time

import shoal


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    k = 3
    while k * k <= n:
        if n % k == 0:
            return False
        k += 2
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, default=100_000_000)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=None, help="default: shoal.cpu_count()")
    args = parser.parse_args(argv)
    numbers = range(args.start, args.start + args.count)
    print(f"primes in [{numbers.start:,}, {numbers.stop:,})")

    started = time.perf_counter()
    expected = [is_prime(n) for n in numbers]
    t_serial = time.perf_counter() - started
    print(f"  serial     {sum(expected):5} primes  {t_serial:6.2f} s")
    for backend in ("processes", "threads", "auto"):
        started = time.perf_counter()
        flags = shoal.map(is_prime, numbers, backend=backend, workers=args.workers)
        elapsed = time.perf_counter() - started
        assert flags == expected
        print(
            f"  {backend:<10} {sum(flags):5} primes  {elapsed:6.2f} s  "
            f"speed-up {t_serial / elapsed:4.2f}x"
        )
    print(f"auto chose {shoal.last_choice()}")


if __name__ == "__main__":
    main()
