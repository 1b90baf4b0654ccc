package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/postern/postern/gateway/policy"
)

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "policy check FILE"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stderr, "Usage: postern "+usage+"\n\nValidates a policy file and explains every error with its line.")
		return errHelp
	}
	if len(args) != 2 || args[0] != "check" {
		return usagef("usage: postern %s", usage)
	}
	data, err := os.ReadFile(args[1])
	if err != nil {
		return errorf("reading policy", err)
	}
	p, err := policy.Parse(data)
	if err != nil {
		var perr *policy.Error
		if errors.As(err, &perr) {
			for _, l := range perr.Lines() {
				fmt.Fprintf(stderr, "%s: %s\n", args[1], l)
			}
			return fmt.Errorf("checking policy %s: %d problem(s)", args[1], len(perr.Problems))
		}
		return errorf("checking policy", err)
	}
	fmt.Fprintf(stdout, "%s: ok, %d rule(s)\n", args[1], len(p.Rules()))
	return nil
}
