"""docs/cli.md, generated from the ``fxpath`` argparse parser so that it cannot drift from
``fxpath --help``. ``python -m fxpath.tools.cli_docs [PATH]`` rewrites it (default
``docs/cli.md``); ``tests/tools/test_cli.py`` checks that the committed file is what `render`
writes.

The parser gives the synopsis and the reference (every command's usage, description, arguments,
options and examples); the hand-written prose around them (what each command prints, MODEL,
exit codes, worked examples) is `fxpath.tools.cli_prose`. The usage lines are formatted here,
not by argparse, so that the file does not change with the Python version.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

from fxpath.tools.arguments import EXIT_HELP, MODEL_HELP, build_parser
from fxpath.tools.cli_prose import GUIDE, INTRO

__all__ = ["DEFAULT", "main", "render"]

DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
_NOTICE = ("<!-- generated from the argparse parser by `python -m fxpath.tools.cli_docs`:\n"
           "     edit fxpath/tools/arguments.py or fxpath/tools/cli_prose.py, not this file -->")
_WIDTH = 100


# -- one argument -----------------------------------------------------------------------------

def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _arguments(action: argparse.Action) -> str:
    """What follows the flag: ``M``, ``M [M ...]``, ``[M]``... (as argparse writes it)."""
    m, nargs = _metavar(action), action.nargs
    if nargs == 0:
        return ""
    if nargs is None:
        return m
    if nargs == "?":
        return f"[{m}]"
    if nargs == "*":
        return f"[{m} ...]"
    if nargs == "+":
        return f"{m} [{m} ...]"
    if nargs == argparse.PARSER:
        return f"{m} ..."
    return " ".join([m] * int(nargs))  # type: ignore[call-overload]


def _invocation(action: argparse.Action, short: bool = False) -> str:
    """``--size DIM [DIM ...]``, ``MODEL``; ``short``: the first option string only."""
    args = _arguments(action)
    if not action.option_strings:
        return args
    names = action.option_strings[:1] if short else action.option_strings
    return ", ".join(f"{name} {args}".rstrip() for name in names)


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with its ``%(default)s``-style fields filled in, as argparse does."""
    params = {k: v for k, v in {**vars(action), "prog": prog}.items()
              if v is not argparse.SUPPRESS}
    params = {k: getattr(v, "__name__", v) for k, v in params.items()}
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    return " ".join((action.help or "").split()) % params


def _item(action: argparse.Action, prog: str) -> str:
    return f"- `{_invocation(action)}`: {_help(action, prog)}".replace("*", r"\*")


# -- one parser -------------------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _key(action: argparse.Action, prog: str) -> tuple[str, str]:
    return _invocation(action), _help(action, prog)


def _common(sub: argparse._SubParsersAction) -> list[argparse.Action]:
    """The flags that every subcommand taking MODEL has, with the same help (``--size``...)."""
    with_model = [p for p in sub.choices.values()
                  if any(a.metavar == "MODEL" for a in p._actions)]
    first = with_model[0]
    keys = [{_key(a, p.prog) for a in _shown(p) if a.option_strings} for p in with_model]
    return [a for a in _shown(first)
            if a.option_strings and all(_key(a, first.prog) in k for k in keys)]


def _wrap(lines: list[str], parts: Iterable[str], indent: str) -> list[str]:
    """``parts`` appended to the last of ``lines``, a new line (at ``indent``) when one would
    pass the page width; a part is never split over two lines."""
    for part in parts:
        if not lines[-1].strip():
            lines[-1] += part
        elif len(lines[-1]) + 1 + len(part) > _WIDTH:
            lines.append(indent + part)
        else:
            lines[-1] += " " + part
    return lines


def _usage(prog: str, flags: list[str], positionals: list[str]) -> str:
    """One line when it fits; else the flags wrapped under the first one, then the
    positionals on a line of their own (as argparse lays them out)."""
    indent = " " * (len(prog) + 1)
    one = " ".join([prog, *flags, *positionals])
    if len(one) <= _WIDTH:
        return one
    lines = _wrap([prog], flags, indent)
    return "\n".join(_wrap([*lines, indent], positionals, indent) if positionals
                     else lines)


def _parts(parser: argparse.ArgumentParser,
           common: list[argparse.Action]) -> tuple[list[str], list[str]]:
    """The usage's flags (``[common flags]`` for the ``common`` ones) and positionals."""
    shared = {_key(a, parser.prog) for a in common}
    flags = [a for a in _shown(parser) if a.option_strings]
    own = [a for a in flags if _key(a, parser.prog) not in shared]
    parts = [_invocation(a, short=True) if a.required else f"[{_invocation(a, short=True)}]"
             for a in own]
    if len(own) < len(flags):
        parts.append("[common flags]")
    return parts, [_invocation(a) for a in _shown(parser) if not a.option_strings]


def _paragraphs(text: str | None) -> list[str]:
    """The description's paragraphs, less the MODEL help and exit codes (each shown once)."""
    blocks = [b.strip("\n") for b in (text or "").split("\n\n")]
    return [b for b in blocks if b and b not in (MODEL_HELP, EXIT_HELP)]


def _epilog(text: str | None) -> list[str]:
    """``examples:`` (and any other titled block of the epilog) as a code block."""
    out = []
    for block in _paragraphs(text):
        title, _, body = block.partition("\n")
        out += [f"{title[:1].upper()}{title[1:]}", "", "```", textwrap.dedent(body), "```", ""]
    return out


def _section(parser: argparse.ArgumentParser, common: list[argparse.Action],
             commands: list[str] | None = None) -> list[str]:
    """One parser of the reference: usage, description, arguments, the ``commands`` list (of
    the top level), its own options (the common flags are listed once), examples."""
    shared = {_key(a, parser.prog) for a in common}
    usage_flags, usage_positionals = _parts(parser, [])
    usage = _usage(parser.prog, ["[-h]", *usage_flags], usage_positionals)
    out = [f"### `{parser.prog}`", "", "```", usage, "```", ""]
    out += [line for p in _paragraphs(parser.description) for line in (p, "")]
    positionals = [a for a in _shown(parser) if not a.option_strings]
    flags = [a for a in _shown(parser) if a.option_strings and _key(a, parser.prog) not in shared]
    if commands:
        out += ["Commands:", "", *commands, ""]
    elif positionals:
        out += ["Arguments:", "", *(_item(a, parser.prog) for a in positionals), ""]
    if flags:
        out += ["Options:", "", *(_item(a, parser.prog) for a in flags), ""]
    if any(_key(a, parser.prog) in shared for a in _shown(parser)):
        out += ["And the [common flags](#common-flags).", ""]
    return out + _epilog(parser.epilog)


# -- the page ---------------------------------------------------------------------------------

def _synopsis(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction,
              common: list[argparse.Action]) -> list[str]:
    width = max(len(p.prog) for p in sub.choices.values())
    flags, positionals = _parts(parser, [])
    lines = [_usage(parser.prog, ["[-h]", *flags], positionals), ""]
    for p in sub.choices.values():  # MODEL first, the common flags abbreviated
        flags, positionals = _parts(p, common)
        lines.append(_usage(p.prog.ljust(width), [*positionals, *flags], []))
    common_usage = " ".join(f"[{_invocation(a, short=True)}]" for a in common)
    return ["## Synopsis", "", "```", *lines, "", f"common flags: {common_usage}", "```", ""]


def _reference(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction,
               common: list[argparse.Action]) -> list[str]:
    helps = {a.dest: a.help for a in sub._choices_actions}
    commands = [f"- [`{name}`](#fxpath-{name}): {helps[name]}" for name in sub.choices]
    first = next(p for p in sub.choices.values() if common[0] in p._actions)
    out = ["## Reference", "",
           "Generated from the parser: the same text as `fxpath --help` and "
           "`fxpath COMMAND --help`", "(every command also takes `-h`, `--help`).", ""]
    out += _section(parser, [], commands)
    out += ["### Common flags", "", "Every command that takes a MODEL takes these:", ""]
    out += [_item(a, first.prog) for a in common] + [""]
    for p in sub.choices.values():
        out += _section(p, common)
    return out


def render() -> str:
    """The text of docs/cli.md."""
    parser = build_parser()
    sub = _subcommands(parser)
    common = _common(sub)
    lines = [INTRO.split("\n", 1)[0], "", _NOTICE, "", INTRO.split("\n", 1)[1].strip("\n"), ""]
    lines += _synopsis(parser, sub, common)
    lines += [GUIDE.strip("\n"), ""]
    lines += _reference(parser, sub, common)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    """Write docs/cli.md (or ``argv[0]``); print where."""
    path = Path(argv[0]) if argv else DEFAULT
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
