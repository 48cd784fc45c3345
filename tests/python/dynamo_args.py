"""Parses command lines with the parsers of the programs that run them: the bridge's
(tandem_dynamo.main.parse_args) and Dynamo's frontend's (dynamo.frontend.main.parse_args, which
also validates the configuration). Reads JSON [[program, [args...]], ...] on stdin, where
program is "tandem_dynamo" or "dynamo.frontend"; prints JSON [{flag: value}, ...] as its last line. A command
line either parser refuses fails the script."""

import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))


def parse(program, args):
    if program == "tandem_dynamo":
        from tandem_dynamo.main import parse_args
        return vars(parse_args(args))
    if program == "dynamo.frontend":
        from dynamo.frontend.main import parse_args
        sys.argv = ["dynamo.frontend", *args]
        config, _, _ = parse_args()
        return {k: v for k, v in vars(config).items() if isinstance(v, (str, int, float, bool))}
    raise SystemExit(f"unknown program {program}")


def main():
    out = []
    for program, args in json.load(sys.stdin):
        try:
            # What the parsers log goes to stderr; stdout's last line is the result.
            with contextlib.redirect_stdout(sys.stderr):
                out.append(parse(program, args))
        except SystemExit as e:
            raise SystemExit(f"{program} {' '.join(args)}: refused ({e})")
    print()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
