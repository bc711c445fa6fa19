package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// exitStatus reports how run ended and returns the process's exit status:
// 0 after success or -h (a command's flags printed to stdout), 2 after a
// usage error (its reason, then the usage, to stderr), 1 after a failure
// (one line to stderr).
func exitStatus(err error, stdout, stderr io.Writer) int {
	var help *helpRequest
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		help.print(stdout)
		return 0
	case errors.Is(err, errUsage):
		if reason := strings.TrimSuffix(err.Error(), ": "+errUsage.Error()); err != errUsage {
			fmt.Fprintln(stderr, "xapsproxy:", oneLine(reason))
		}
		fmt.Fprint(stderr, usage)
		return 2
	}
	fmt.Fprintln(stderr, "xapsproxy:", oneLine(err.Error()))
	return 1
}

// helpRequest is a command's -h: exitStatus prints the command's usage
// line and every flag with its doc.
type helpRequest struct{ fs *flag.FlagSet }

func (h *helpRequest) Error() string { return h.fs.Name() + ": " + flag.ErrHelp.Error() }
func (h *helpRequest) Unwrap() error { return flag.ErrHelp }

func (h *helpRequest) print(w io.Writer) {
	line := "xapsproxy " + h.fs.Name() + " [flags]"
	for l := range strings.Lines(usage) {
		if strings.HasPrefix(l, "  "+h.fs.Name()+" ") {
			// The line of the command list without its description.
			if i := strings.Index(l, "   "); i > 0 {
				l = l[:i]
			}
			line = "xapsproxy " + strings.TrimSpace(l)
		}
	}
	fmt.Fprintf(w, "usage: %s\n\nflags:\n", line)
	h.fs.SetOutput(w)
	h.fs.PrintDefaults()
	h.fs.SetOutput(io.Discard)
}
