// Command probe is the runner tests' app with awkward behaviours: it
// crashes, ignores SIGTERM or reports (as digests, never in clear) the
// secrets it was given.
package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	switch mode {
	case "crash":
		fmt.Fprintln(os.Stderr, "probe: crashing on purpose")
		os.Exit(3)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("probe: ignoring SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "secret":
		fmt.Printf("env digest %x\n", sha256.Sum256([]byte(os.Getenv("TOKEN"))))
		if b, err := os.ReadFile("conf/token"); err == nil {
			st, _ := os.Stat("conf/token")
			fmt.Printf("file digest %x mode %o\n", sha256.Sum256(b), st.Mode().Perm())
		} else {
			fmt.Println("file error", err)
		}
	case "cat":
		b, err := os.ReadFile(os.Args[2])
		st, serr := os.Stat(os.Args[2])
		if err != nil || serr != nil {
			fmt.Println("cat error", err, serr)
			break
		}
		fmt.Printf("cat %q mode %o\n", b, st.Mode().Perm())
	case "fork":
		// A child in the same process group, which the kernel's
		// parent-death signal does not reach.
		cmd := exec.Command(os.Args[0], "stubborn")
		if err := cmd.Start(); err != nil {
			fmt.Println("fork error", err)
			break
		}
		fmt.Println("forked", cmd.Process.Pid)
	case "alloc":
		// Grows until a memory limit kills it.
		var hold [][]byte
		for {
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = 1
			}
			hold = append(hold, b)
			fmt.Println("probe: holding", len(hold)*8, "MiB")
		}
	case "flood":
		// More lines at once than an instance may publish.
		for i := range 12000 {
			fmt.Println("probe: line", i)
		}
	case "env":
		for _, e := range os.Environ() {
			fmt.Println("env", e)
		}
	}
	fmt.Println("probe: ready")
	<-term
	fmt.Println("probe: bye")
}
