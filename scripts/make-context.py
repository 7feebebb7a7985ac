#!/usr/bin/env python3
"""Makes a big build context, the same bytes every time (seeded): a tree of source-like files
of varied sizes, as a monorepo has, for `scripts/bench.sh --context`.

    scripts/make-context.py DIR [--files N] [--bytes B] [--seed S]

Defaults: 100,000 files, 2,000,000,000 bytes in total, seed 19. DIR must not exist. Besides
the files it writes DIR/Dockerfile (`FROM ${REG}/busybox:latest`, `COPY . /app`, a small
RUN) and prints the path of one file in the middle of the tree (the one-file-change rows
edit it).

What is in it: about 95 % of the files are text made of source-like lines (keywords,
identifiers from a fixed vocabulary, numbers, comments, indentation), drawn from a 32 MiB
corpus at random offsets with a header naming the file; 5 % are random bytes (images,
archives: incompressible). Sizes follow a log-normal law (median about 6 KiB, a long tail
up to 64 MiB), scaled so the total is exactly B. Directories hold 20 to 60 entries, three
levels deep.
"""

import argparse
import math
import os
import random
import sys

DOCKERFILE = """ARG REG=127.0.0.1:5000
FROM ${REG}/busybox:latest
COPY . /app
RUN ls /app > /app.list
"""

KEYWORDS = [
    "fn", "let", "mut", "if", "else", "for", "while", "return", "match", "struct", "impl",
    "pub", "use", "const", "static", "class", "def", "import", "from", "function", "var",
    "int", "char", "void", "unsigned", "switch", "case", "break", "continue", "namespace",
]
SYMBOLS = ["(", ")", "{", "}", "[", "]", ";", ",", ".", "=", "==", "+", "-", "*", "->", "::", "&&"]


def corpus(rng, size):
    """Source-like text: lines of tokens with indentation and comments."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    identifiers = []
    for _ in range(4000):
        parts = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8)))
                 for _ in range(rng.randint(1, 3))]
        identifiers.append("_".join(parts) if rng.random() < 0.6 else "".join(p.capitalize() for p in parts))
    # Names repeat as in real code: a few very often, most rarely (Zipf's law).
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(identifiers))]
    pool = rng.choices(identifiers, weights=weights, k=1 << 20)
    position = 0

    def name():
        nonlocal position
        position = (position + 1) & ((1 << 20) - 1)
        return pool[position]

    words = ["lorem", "value", "index", "buffer", "error", "result", "the", "a", "is", "when",
             "returns", "checks", "called", "before", "after", "cache", "layer", "digest"]
    lines = []
    length = 0
    depth = 0
    while length < size:
        roll = rng.random()
        if roll < 0.08:
            line = "    " * depth + "// " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        elif roll < 0.12:
            line = ""
        elif roll < 0.2 and depth < 5:
            line = "    " * depth + rng.choice(KEYWORDS) + " " + name() + "(" + \
                ", ".join(name() for _ in range(rng.randint(0, 3))) + ") {"
            depth += 1
        elif roll < 0.28 and depth > 0:
            depth -= 1
            line = "    " * depth + "}"
        else:
            tokens = []
            for _ in range(rng.randint(2, 9)):
                pick = rng.random()
                if pick < 0.5:
                    tokens.append(name())
                elif pick < 0.65:
                    tokens.append(rng.choice(KEYWORDS))
                elif pick < 0.8:
                    tokens.append(str(rng.randint(0, 4096)))
                else:
                    tokens.append(rng.choice(SYMBOLS))
            line = "    " * depth + " ".join(tokens) + ";"
        lines.append(line)
        length += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--bytes", type=int, default=2_000_000_000)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    if os.path.exists(args.dir):
        sys.exit(f"make-context: {args.dir} exists")
    rng = random.Random(args.seed)
    text = corpus(rng, 32 << 20)

    count = args.files - 1  # the Dockerfile is one of them
    sizes = [min(int(math.exp(rng.gauss(math.log(6000), 1.6))), 64 << 20) + 64 for _ in range(count)]
    scale = (args.bytes - len(DOCKERFILE)) / sum(sizes)
    sizes = [max(64, int(size * scale)) for size in sizes]
    sizes[-1] += args.bytes - len(DOCKERFILE) - sum(sizes)
    if sizes[-1] < 0:
        sys.exit("make-context: too many files for so few bytes")

    os.makedirs(args.dir)
    with open(os.path.join(args.dir, "Dockerfile"), "w") as out:
        out.write(DOCKERFILE)
    extensions = [".rs", ".go", ".py", ".c", ".h", ".ts", ".js", ".java", ".md", ".json"]
    directory = None
    left_in_dir = 0
    middle = None
    for index, size in enumerate(sizes):
        if left_in_dir == 0:
            directory = os.path.join(args.dir, f"pkg{index // 2400:03d}", f"mod{index // 240:04d}",
                                     f"dir{index // 40:05d}")
            os.makedirs(directory, exist_ok=True)
            left_in_dir = 40
        left_in_dir -= 1
        binary = rng.random() < 0.05
        name = f"f{index:06d}" + (rng.choice([".png", ".bin", ".gz"]) if binary else rng.choice(extensions))
        path = os.path.join(directory, name)
        if binary:
            data = rng.randbytes(size)
        else:
            header = f"// {os.path.relpath(path, args.dir)}\n".encode()
            offset = rng.randrange(len(text))
            body = bytearray(header)
            while len(body) < size:
                body += text[offset:offset + size - len(body)]
                offset = 0
            data = bytes(body[:size])
        with open(path, "wb") as out:
            out.write(data)
        if index == len(sizes) // 2 and not binary:
            middle = path
        elif middle is None and index > len(sizes) // 2 and not binary:
            middle = path
    print(os.path.relpath(middle, args.dir))


if __name__ == "__main__":
    main()
