package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// envName is the environment variable of a flag: --data-dir is
// LAKEHOUSE_DATA_DIR.
func envName(flagName string) string {
	return "LAKEHOUSE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags sets fs's flags from, in increasing precedence: their defaults,
// the configuration file (when fs has a --config flag and it or
// LAKEHOUSE_CONFIG names one), LAKEHOUSE_* environment variables, and the
// command line. The flag set's output is where -h prints the command's help
// (stdout, so that it pipes into a pager); parse errors are returned, not
// printed, and main reports them on stderr.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if fs.Lookup(configFlag) != nil {
		path, err := configPath(args)
		if err != nil {
			return err
		}
		if path != "" {
			if err := applyConfigFile(fs, path); err != nil {
				return err
			}
		}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	help := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(help)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(help, fs)
		return err
	case err != nil:
		return fmt.Errorf("%w (run 'lakehouse %s -h' for its flags)", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (run 'lakehouse %s -h' for its flags)", fs.Args(), fs.Name())
	}
	return nil
}

// printUsage prints a command's help: its summary, its longer doc, and each
// flag with its environment variable and default.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	cmd := commands()[fs.Name()]
	fmt.Fprintf(w, "usage: lakehouse %s [flags]\n\n%s.\n", fs.Name(), upperFirst(cmd.summary))
	if cmd.doc != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.doc))
	}
	fmt.Fprintln(w, "\nflags (each can also be set through the environment variable shown; the command line wins):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		kind, text := flag.UnquoteUsage(f)
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  --%s %s\t%s\t%s%s\n", f.Name, kind, envName(f.Name), text, def)
	})
	tw.Flush()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
