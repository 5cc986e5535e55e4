"""Functions of one binary that callgrind profiles saw run, for LLD's
--symbol-ordering-file: the first profile's functions by self cost, hottest
first, then those only the later profiles ran, likewise.

    python3 text_order.py BINARY_NAME PROFILE... > link/text-order.txt
    python3 text_order.py --check BINARY ORDER_FILE

The second form says how much of the list a build still has: its symbols
carry hashes that change with the toolchain and with each function's
signature, so a list goes stale as the code moves on. A stale name only
fails to pack its function; regenerate when the share falls.

Profiles come from `valgrind --tool=callgrind --compress-strings=no
--demangle=no` (bench/text-order.sh), so names are the symbols the linker
sees. Addresses without a symbol are left out.
"""

import collections
import re
import subprocess
import sys


def functions(path, binary):
    """Self cost (instructions) of every function of `binary` in one profile."""
    cost = collections.Counter()
    obj_of = {}
    fn, ob, skip = None, None, False
    with open(path, errors="replace") as f:
        for line in f:
            if skip:  # the inclusive cost of the call named above
                skip = False
            elif line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("fn="):
                # name'2: the same function entered recursively.
                fn = re.sub(r"'\d+$", "", line[3:].strip())
                obj_of.setdefault(fn, ob)
            elif line.startswith("calls="):
                skip = True
            elif fn and line[:1].isdigit():
                fields = line.split()
                if len(fields) >= 2:
                    cost[fn] += int(fields[1])
    ours = [n for n, o in obj_of.items() if o and o.endswith("/" + binary) and not n.startswith(("0x", "("))]
    return sorted(ours, key=lambda n: -cost[n])


def check(binary, order_file):
    nm = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
    have = {line.split()[-1] for line in nm.splitlines() if line.strip()}
    with open(order_file) as f:
        listed = [line.strip() for line in f if line.strip()]
    found = sum(name in have for name in listed)
    print(f"{found} of {len(listed)} listed functions are in {binary} ({100 * found / max(len(listed), 1):.0f} %)")


def main():
    if sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
        return
    binary, profiles = sys.argv[1], sys.argv[2:]
    seen = set()
    for path in profiles:
        for name in functions(path, binary):
            if name not in seen:
                seen.add(name)
                print(name)


if __name__ == "__main__":
    main()
