package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCommand writes the man pages, generated from the flag definitions so
// they never drift from --help (`make man`). Hidden: it is for packagers.
func manCommand(root *cobra.Command) *cobra.Command {
	cmd := newCommand("gen-man DIR", "write the man pages into DIR", "Write rangefs(1) and one page per subcommand into DIR.\n")
	cmd.Hidden = true
	cmd.Args = cobra.ExactArgs(1)
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		if err := os.MkdirAll(args[0], 0o755); err != nil {
			return err
		}
		root.DisableAutoGenTag = true
		// A man page has no usage template: the exit codes go in its text.
		for _, c := range append([]*cobra.Command{root}, root.Commands()...) {
			c.Long += "\n" + exitCodesHelp
		}
		hdr := &doc.GenManHeader{Title: "RANGEFS", Section: "1", Source: "rangefs " + version, Manual: "rangefs manual"}
		if err := doc.GenManTree(root, hdr, args[0]); err != nil {
			return fmt.Errorf("writing man pages: %w", err)
		}
		return nil
	}
	return cmd
}
