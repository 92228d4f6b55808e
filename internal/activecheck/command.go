package activecheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Runner runs argv to its end and returns its exit code and what it wrote;
// when ctx ends first it kills argv's command and all it started, and
// returns ctx's error. proc.Reaper.RunCheck is the one lockex uses: every
// child of lockex must be waited for by its reaper.
type Runner func(ctx context.Context, argv []string) (code int, output []byte, err error)

type commandProbe struct {
	argv []string
	run  Runner
}

// Command returns a probe that runs argv, as the kubelet's exec probe does:
// exit 0 passes, anything else fails, and so does a command still running
// at the check's timeout, which is killed.
func Command(argv []string, run Runner) Probe {
	return &commandProbe{argv: argv, run: run}
}

func (p *commandProbe) Check(ctx context.Context) error {
	code, out, err := p.run(ctx, p.argv)
	if err != nil {
		return err
	}
	if code == 0 {
		return nil
	}
	msg := fmt.Sprintf("%s: exit %d", p, code)
	if o := strings.Join(strings.Fields(string(out)), " "); o != "" {
		msg += ": " + o
	}
	return errors.New(msg)
}

func (p *commandProbe) String() string { return "exec " + JoinCommand(p.argv) }

// ParseCommand splits a command line into argv the way a POSIX shell splits
// words, and does nothing else a shell does: single quotes keep everything
// up to the next one; double quotes keep everything, a backslash in them
// only quoting $ ` " \ (and joining lines), as in a shell; a backslash
// outside quotes keeps the next character. Other bytes are kept as they
// are, UTF-8 or not. Nothing is expanded, so what would make a shell do
// more than split ($ ` | & ; < > ( ) unquoted, $ and ` in double quotes)
// is refused rather than passed on literally: whoever wants a shell writes
// sh -c '...'.
func ParseCommand(s string) ([]string, error) {
	var (
		argv    []string
		word    strings.Builder
		inWord  bool
		quote   byte // ' or ", while inside quotes
		escaped bool
	)
	// Byte by byte: all that is special is ASCII, and a byte that is not
	// UTF-8 (a Latin-1 file name) must reach the command as it was.
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
			switch {
			case c == '\n':
				// A line joined, as in a shell.
			case quote == '"' && strings.IndexByte("$`\"\\", c) < 0:
				word.WriteByte('\\')
				word.WriteByte(c)
			default:
				word.WriteByte(c)
				inWord = true
			}
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				word.WriteByte(c)
			}
		case quote == '"':
			switch c {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			case '$', '`':
				return nil, fmt.Errorf("%q: %q inside double quotes is expanded by a shell, and the command runs without one: use single quotes, or write sh -c '...'", s, c)
			default:
				word.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\':
			escaped = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				argv = append(argv, word.String())
				word.Reset()
				inWord = false
			}
		case strings.IndexByte("$`|&;<>()", c) >= 0:
			return nil, fmt.Errorf("%q: %q is shell syntax, and the command runs without a shell: put it in single quotes, or write sh -c '...'", s, c)
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	switch {
	case quote != 0:
		return nil, fmt.Errorf("%q: unterminated %c quote", s, quote)
	case escaped:
		return nil, fmt.Errorf("%q: ends in a backslash", s)
	}
	if inWord {
		argv = append(argv, word.String())
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("%q: no command", s)
	}
	return argv, nil
}

// JoinCommand writes argv so that ParseCommand (and a shell) reads it back:
// words that need it are in single quotes.
func JoinCommand(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()") {
			words[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(words, " ")
}
