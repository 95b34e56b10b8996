#!/usr/bin/env python3
"""Man pages from the argument parser: reads `wayback --experimental-dump-help` (JSON) on stdin and
writes wayback.1 and one wayback-<command>.1 per command (wayback-repo-sync.1 for a nested one)
into the directory given, so that the pages say exactly what `--help` says.

usage: wayback --experimental-dump-help | packaging/manpage.py OUTDIR VERSION DATE
"""
import json
import os
import sys

SECTION = "1"


def roff(text):
    """Escapes text for roff: backslashes, and a line that would start with a control character."""
    out = []
    for line in text.replace("\\", "\\e").split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def option_label(arg):
    names = []
    for n in arg.get("names", []):
        names.append(("\\-" if n["kind"] == "short" else "\\-\\-") + n["name"].replace("-", "\\-"))
    label = ", ".join("\\fB%s\\fR" % n for n in names)
    if arg["kind"] == "option":
        label += " \\fI<%s>\\fR" % arg.get("valueName", "value")
    if arg["kind"] == "positional":
        label = "\\fI<%s>\\fR" % arg.get("valueName", "value")
    return label


def synopsis(path, cmd):
    parts = ["\\fB%s\\fR" % " ".join(path)]
    for a in cmd.get("arguments", []):
        if not a.get("shouldDisplay", True) or a.get("valueName") in ("help", "version"):
            continue
        label = option_label(a).split(", ")[-1]
        if a.get("isRepeating"):
            label += " ..."
        parts.append(("[%s]" % label) if a.get("isOptional") else label)
    if cmd.get("subcommands"):
        parts.append("\\fI<command>\\fR")
    return " ".join(parts)


def discussion(text):
    """The discussion text: paragraphs, and indented lines (examples) kept as they are."""
    out = []
    for para in text.strip().split("\n\n"):
        lines = para.split("\n")
        if any(l.startswith("  ") for l in lines):
            out.append(".PP\n.nf\n.RS 4\n%s\n.RE\n.fi" % roff("\n".join(l.rstrip() for l in lines)))
        else:
            out.append(".PP\n%s" % roff(" ".join(l.strip() for l in lines)))
    return "\n".join(out)


def page(path, cmd, version, date, see_also):
    name = "-".join(path)
    title = name.upper()
    lines = ['.TH "%s" "%s" "%s" "Wayback %s" "Wayback Manual"' % (title, SECTION, date, version),
             ".SH NAME",
             "%s \\- %s" % (name.replace("-", "\\-"), roff(cmd.get("abstract", "").rstrip("."))),
             ".SH SYNOPSIS",
             synopsis(path, cmd)]
    text, _, examples = cmd.get("discussion", "").partition("Examples:\n")
    if text.strip():
        lines += [".SH DESCRIPTION", discussion(text)]
    args = [a for a in cmd.get("arguments", []) if a.get("shouldDisplay", True)]
    positional = [a for a in args if a["kind"] == "positional"]
    options = [a for a in args if a["kind"] != "positional"]
    if positional:
        lines.append(".SH ARGUMENTS")
        for a in positional:
            lines += [".TP", option_label(a), roff(a.get("abstract", "")) + default(a)]
    if options:
        lines.append(".SH OPTIONS")
        for a in options:
            lines += [".TP", option_label(a), roff(a.get("abstract", "")) + default(a)]
    subs = [s for s in cmd.get("subcommands", []) if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    if subs:
        lines.append(".SH COMMANDS")
        for s in subs:
            sub_name = "-".join(path + [s["commandName"]])
            lines += [".TP", "\\fB%s\\fR(%s)" % (sub_name.replace("-", "\\-"), SECTION), roff(s.get("abstract", ""))]
    if examples.strip():
        body = "\n".join(l[2:] if l.startswith("  ") else l for l in examples.rstrip().split("\n"))
        lines += [".SH EXAMPLES", ".nf", ".RS 4", roff(body), ".RE", ".fi"]
    if len(path) == 1:
        lines += [".SH EXIT STATUS",
                  "0 on success. On failure one line on standard error, "
                  "\\fBwayback: error:\\fR \\fIwhat happened\\fR; \\fIwhat to do\\fR, and a stable status: "
                  "1 not found, 2 usage, 3 configuration, 4 connection, 5 cluster, 6 repository, 7 corrupt, "
                  "8 conflict, 9 locked, 10 archive timeout, 11 I/O, 12 PostgreSQL, 13 restore target, "
                  "14 access, 15 replica, 16 page checksum, 17 expiry refused, 18 no space, 19 drill failed, "
                  "20 objective missed, 21 timeout, 22 mismatch, 70 internal. "
                  "\\fBwayback check\\fR follows the Nagios convention (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). "
                  "The list with fixes is /usr/share/doc/wayback/exit-codes.md.",
                  ".SH FILES",
                  ".TP", "\\fI/etc/wayback/wayback.yaml\\fR",
                  "The configuration (mode 600, owned by the PostgreSQL OS user); an example is in "
                  "/usr/share/doc/wayback/examples/wayback.example.yaml.",
                  ".TP", "\\fI/etc/wayback/wayback.env\\fR",
                  "Secrets for the daemon's systemd unit (S3 keys, passphrases, SMTP password); see "
                  "/usr/share/doc/wayback/examples/wayback.env.example.",
                  ".SH ENVIRONMENT",
                  ".TP", "\\fBWAYBACK_CONFIG\\fR", "The configuration file when \\-\\-config is not given.",
                  ".TP", "\\fBAWS_ACCESS_KEY_ID\\fR, \\fBAWS_SECRET_ACCESS_KEY\\fR",
                  "S3 credentials when the configuration names none."]
    lines += [".SH SEE ALSO", ", ".join("\\fB%s\\fR(%s)" % (s.replace("-", "\\-"), SECTION) for s in see_also)
              + (", " if see_also else "") + "the documentation in /usr/share/doc/wayback/."]
    return "\n".join(lines) + "\n"


def default(arg):
    d = arg.get("defaultValue")
    return (" (default: %s)" % roff(str(d))) if d not in (None, "", "false") else ""


def walk(cmd, path, out, version, date):
    subs = [s for s in cmd.get("subcommands", []) if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    see = (["-".join(path[:-1])] if len(path) > 1 else []) + ["-".join(path + [s["commandName"]]) for s in subs]
    written = ["-".join(path)]
    with open(os.path.join(out, "-".join(path) + "." + SECTION), "w", encoding="utf-8") as f:
        f.write(page(path, cmd, version, date, see))
    for s in subs:
        written += walk(s, path + [s["commandName"]], out, version, date)
    return written


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    out, version, date = sys.argv[1:]
    tool = json.load(sys.stdin)["command"]
    os.makedirs(out, exist_ok=True)
    pages = walk(tool, [tool["commandName"]], out, version, date)
    print("%d man pages in %s" % (len(pages), out))


if __name__ == "__main__":
    main()
