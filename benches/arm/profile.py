#!/usr/bin/env python3
"""Guest instructions per function, from the block records of benches/arm/insncount.c.

    benches/arm/profile.py BINARY MANY.blocks ONE.blocks --runs N [--top 30]

MANY and ONE are the records of two runs of the same program that differ only in how many
inferences they make (1 + N and 1, as benches/arm_insns.sh runs them): per inference = the
difference over N, so loading cancels out. BINARY is the program with its symbol table (a
release build linked with `-C strip=none`); qemu-user maps a position-independent executable
at --base (0x5500000000 on a 64-bit guest, `qemu-aarch64 -d page` shows it). Blocks outside
the executable (the C library, the loader) are counted as "[outside the executable]".
Prints one line per function, most instructions first, and the total.
"""

import argparse
import bisect
import collections
import re
import subprocess
import sys


def symbols(binary, nm):
    """Sorted (address, name) of the executable's functions."""
    listing = subprocess.run(
        [nm, "--defined-only", "-n", "-C", binary],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = []
    for line in listing.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            name = re.sub(r"::h[0-9a-f]{16}$", "", parts[2])
            found.append((int(parts[0], 16), name))
    if not found:
        sys.exit(f"profile.py: {binary} has no function symbols (build it with -C strip=none)")
    return found


def per_function(path, table, base, end):
    """Instructions executed per function in one block record."""
    addresses = [address for address, _ in table]
    totals = collections.Counter()
    with open(path) as records:
        for line in records:
            vaddr, insns, executions = line.split()
            offset = int(vaddr, 16) - base
            if offset < addresses[0] or offset >= end:
                name = "[outside the executable]"
            else:
                name = table[bisect.bisect_right(addresses, offset) - 1][1]
            totals[name] += int(insns) * int(executions)
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("many")
    parser.add_argument("one")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--base", type=lambda v: int(v, 0), default=0x5500000000)
    parser.add_argument("--nm", default="aarch64-linux-gnu-nm")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    table = symbols(args.binary, args.nm)
    end = table[-1][0] + (1 << 20)
    many = per_function(args.many, table, args.base, end)
    one = per_function(args.one, table, args.base, end)
    inside = sum(v for k, v in many.items() if k != "[outside the executable]")
    if inside == 0:
        sys.exit(f"profile.py: no block of {args.many} lies in {args.binary} at base {args.base:#x}")
    per_inference = {name: (many[name] - one.get(name, 0)) / args.runs for name in many}
    total = sum(per_inference.values())
    print(f"{'M instr.':>9} {'share':>6}  function (per inference, {args.runs} runs)")
    ranked = sorted(per_inference.items(), key=lambda item: -item[1])
    for name, count in ranked[: args.top]:
        print(f"{count / 1e6:9.2f} {100 * count / total:5.1f}%  {name}")
    rest = sum(count for _, count in ranked[args.top :])
    print(f"{rest / 1e6:9.2f} {100 * rest / total:5.1f}%  ({len(ranked) - args.top} others)")
    print(f"{total / 1e6:9.2f} 100.0%  total")


if __name__ == "__main__":
    main()
