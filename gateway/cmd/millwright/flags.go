package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// parseInterspersed parses fs over args allowing flags after positional arguments
// ("report pump@3 --format md"), returning the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseCommand parses a command's args with fs as parseInterspersed does, its errors
// silenced. printUsage writes usage and fs's flags; on -h it has written them to stdout
// and help is set.
func parseCommand(fs *flag.FlagSet, usage string, args []string, stdout io.Writer) (pos []string, printUsage func(io.Writer), help bool, err error) {
	fs.SetOutput(io.Discard)
	printUsage = func(w io.Writer) { writeUsage(w, fs, usage) }
	pos, err = parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return nil, printUsage, true, nil
	}
	return pos, printUsage, false, err
}

// parseFlags parses a command's args with fs as parseCommand does, and ends the command
// where that says to: on -h it has written usage and the flags to stdout (code 0); on a
// bad flag it writes the error, usage and the flags to stderr (code 2). ok says the
// command goes on, with its positional arguments pos.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	pos, printUsage, help, err := parseCommand(fs, usage, args, stdout)
	switch {
	case help:
		return nil, 0, false
	case err != nil:
		fmt.Fprintf(stderr, "millwright %s: %v\n\n", fs.Name(), err)
		printUsage(stderr)
		return nil, 2, false
	}
	return pos, 0, true
}

// parseOnlyFlags is parseFlags for a command that takes no positional argument: one is
// refused, named (code 2).
func parseOnlyFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	pos, code, ok := parseFlags(fs, usage, args, stdout, stderr)
	if ok && len(pos) > 0 {
		fmt.Fprintf(stderr, "millwright %s: unexpected argument %q; it takes flags only\n\n%s", fs.Name(), pos[0], usage)
		return 2, false
	}
	return code, ok
}

// usageError ends a command whose flags parsed but are not valid, as parseFlags ends one
// with a bad flag: it writes each problem in err (one per line), usage and fs's flags to
// stderr, and returns code 2.
func usageError(fs *flag.FlagSet, usage string, err error, stderr io.Writer) int {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(stderr, "millwright %s: %s\n", fs.Name(), line)
	}
	fmt.Fprintln(stderr)
	writeUsage(stderr, fs, usage)
	return 2
}

// writeUsage writes usage and fs's flags to w (fs's own output stays discarded).
func writeUsage(w io.Writer, fs *flag.FlagSet, usage string) {
	fmt.Fprint(w, usage)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
