package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/dot-do/lakehouse-rpc/internal/auth"
)

const tokenDoc = `Subcommands:
  lakehouse token new --name NAME [--sources IDS] [--scopes SCOPES]
      generate a secret; print it (give it to the client) and the entry to add
      to the --auth-tokens file (only the secret's SHA-256 is stored there)
  lakehouse token hash < secret
      print the stored form (sha256:<hex>) of a secret read from stdin`

// runToken implements `lakehouse token new|hash`.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return tokenCommand(args, os.Stdin, stdout)
}

func tokenCommand(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		args = []string{"new", "-h"} // the help of token new, with the subcommands
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("token: want a subcommand: new or hash (lakehouse token -h)")
	}
	switch args[0] {
	case "new":
		fs := flag.NewFlagSet("token", flag.ContinueOnError)
		fs.SetOutput(stdout)
		name := fs.String("name", "", "token name (required): shown in logs and used as the key of per-token limits")
		sources := fs.String("sources", "", "comma-separated source ids or globs the token may write")
		scopes := fs.String("scopes", "", "comma-separated scopes: flush, status, admin")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *name == "" {
			return errors.New("--name is required")
		}
		secret, err := auth.NewSecret()
		if err != nil {
			return err
		}
		entry := auth.Entry{Name: *name, Hash: auth.Hash(secret), Sources: splitList(*sources), Scopes: splitList(*scopes)}
		// Validate the entry as the server will.
		out, err := yaml.Marshal(auth.File{Tokens: []auth.Entry{entry}})
		if err != nil {
			return err
		}
		if _, err := auth.ParseFile(out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# secret (give it to the client; it is not stored anywhere):\n# %s\n%s", secret, out)
		return nil
	case "hash":
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		secret := strings.TrimSpace(line)
		if secret == "" {
			return errors.New("token hash: no secret on stdin")
		}
		fmt.Fprintln(stdout, auth.Hash(secret))
		return nil
	}
	return fmt.Errorf("token: unknown subcommand %q (new or hash)", args[0])
}
