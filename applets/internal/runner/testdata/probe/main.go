// Command probe is the runner tests' app with awkward behaviours: it
// crashes, ignores SIGTERM, reports (as digests, never in clear) the
// secrets it was given, or listens on a port for its health check.
package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/consumer"
)

func main() {
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	switch mode {
	case "plant":
		// plant DIR: replace conf/ in its home (data/ in a sandbox, the
		// instance dir in exec mode), where the runner placed a file, with
		// a link to DIR, and crash so that the runner places it again.
		conf := filepath.Join(os.Getenv("HOME"), "conf")
		if fi, err := os.Lstat(conf); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			fmt.Println("probe: planted")
			<-term
			return
		}
		if err := os.Rename(conf, conf+".old"); err != nil {
			fmt.Println("probe: rename:", err)
		}
		if err := os.Symlink(os.Args[2], conf); err != nil {
			fmt.Println("probe: symlink:", err)
		}
		os.Exit(3)
	case "crash":
		fmt.Fprintln(os.Stderr, "probe: crashing on purpose")
		os.Exit(3)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		// stubborn ADDR also listens on ADDR, once SIGTERM is ignored, with
		// SO_REUSEPORT so that the replicas of one app share it as their
		// health check's port.
		if len(os.Args) > 2 {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
				})
				if err != nil {
					return err
				}
				return serr
			}}
			ln, err := lc.Listen(context.Background(), "tcp", os.Args[2])
			if err != nil {
				fmt.Fprintln(os.Stderr, "probe:", err)
				os.Exit(1)
			}
			go http.Serve(ln, http.NotFoundHandler())
		}
		fmt.Println("probe: ignoring SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "listen":
		// listen ADDR [TARGET] serves ADDR, forwarding each connection to
		// TARGET when given, else answering 200. An ADDR taken by another
		// program is reported, and the probe runs on without it, as an
		// app that does not need its port to live.
		ln, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Println("probe: listen error:", err)
			break
		}
		if len(os.Args) > 3 {
			go forward(ln, os.Args[3])
		} else {
			go http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		}
		fmt.Println("probe: listening on", ln.Addr())
	case "crashafter":
		// crashafter ADDR N [once] listens on ADDR and exits 3 as it
		// accepts its Nth connection: an app that passes its first health
		// checks, then crashes. With once, only a process that finds no
		// file "crashed" in its directory does, and leaves one there: the
		// instance's next process runs on.
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		crash := true
		if len(os.Args) > 4 && os.Args[4] == "once" {
			_, err := os.Stat("crashed")
			crash = err != nil
		}
		ln, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		go func() {
			for i := 1; ; i++ {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
				if crash && i >= n {
					if err := os.WriteFile("crashed", nil, 0o600); err != nil {
						fmt.Fprintln(os.Stderr, "probe:", err)
					}
					fmt.Fprintln(os.Stderr, "probe: crashing after", i, "connections")
					os.Exit(3)
				}
			}
		}()
	case "bind":
		// bind ADDR is a server that sets up for a moment, then listens
		// on ADDR or exits 1, as most do when their port is taken.
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		go http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	case "spawn":
		// spawn MODE ARGS... runs another probe as its child, in its
		// process group, and holds nothing itself.
		cmd := exec.Command(os.Args[0], os.Args[2:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			fmt.Println("spawn error", err)
			break
		}
		fmt.Println("spawned", cmd.Process.Pid)
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
	case "daemon":
		// daemon [MODE ARGS...] is a daemon's double fork: a child in a
		// session of its own starts the daemon, a probe in MODE (stubborn,
		// which ignores SIGTERM, by default), and exits, so the daemon is
		// neither the probe's child nor in its process group.
		cmd := exec.Command(os.Args[0], append([]string{"daemonize"}, os.Args[2:]...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err := cmd.Output()
		if err != nil {
			fmt.Println("daemon error", err)
			break
		}
		fmt.Printf("daemon %s", out)
	case "daemonize":
		// Its output is /dev/null: the probe reads this one's to its end.
		args := os.Args[2:]
		if len(args) == 0 {
			args = []string{"stubborn"}
		}
		cmd := exec.Command(os.Args[0], args...)
		if err := cmd.Start(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		os.Exit(0)
	case "fork":
		// A child in the same process group, which the kernel's
		// parent-death signal does not reach.
		cmd := exec.Command(os.Args[0], "stubborn")
		if err := cmd.Start(); err != nil {
			fmt.Println("fork error", err)
			break
		}
		fmt.Println("forked", cmd.Process.Pid)
	case "flush":
		// flush DIR is a daemon that takes a second to flush once told to
		// stop, far longer than the probe that started it, which exits at
		// once. It writes its pid to DIR/ready once it handles SIGTERM; at SIGTERM it
		// writes DIR/term, then, a second later, DIR/flushed, and exits.
		dir := os.Args[2]
		if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			os.Exit(1)
		}
		<-term
		if err := os.WriteFile(filepath.Join(dir, "term"), nil, 0o600); err != nil {
			os.Exit(1)
		}
		time.Sleep(time.Second)
		if err := os.WriteFile(filepath.Join(dir, "flushed"), nil, 0o600); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	case "hold":
		// hold MIB holds MIB MiB of memory it wrote to.
		mib, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		held := make([]byte, mib<<20)
		for i := range held {
			held[i] = 1
		}
		defer runtime.KeepAlive(held)
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
	case "childoom":
		// childoom CODE: a worker grows until a memory limit kills it,
		// and the probe, which survives it, exits CODE.
		code, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(2)
		}
		err = exec.Command(os.Args[0], "alloc").Run()
		fmt.Println("probe: worker:", err)
		os.Exit(code)
	case "tick":
		// Prints a numbered line every 10ms until told to stop.
		for i := 0; ; i++ {
			select {
			case <-term:
				os.Exit(0)
			case <-time.After(10 * time.Millisecond):
			}
			fmt.Println("probe: tick", i)
		}
	case "flood":
		// More lines at once than an instance may publish.
		for i := range 12000 {
			fmt.Println("probe: line", i)
		}
	case "home":
		// home prints what the app is told of its user, and writes a file
		// in its home, as programs keep their state there.
		home, err := os.UserHomeDir()
		if err == nil {
			err = os.WriteFile(filepath.Join(home, ".probe"), []byte("probe"), 0o600)
		}
		fmt.Printf("home %s user %s logname %s: %v\n", os.Getenv("HOME"), os.Getenv("USER"), os.Getenv("LOGNAME"), err)
	case "mount":
		// mount DIR binds DIR on m in its directory and leaves it there,
		// as an exec app running as root may.
		if err := os.Mkdir("m", 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		if err := unix.Mount(os.Args[2], "m", "", unix.MS_BIND, ""); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		fmt.Println("probe: mounted")
	case "burn":
		// burn spends burnCPU of CPU time and exits 3, unless a process
		// of the instance did before (a file "burned" in its home): an
		// instance whose first run used CPU, and whose next one does not.
		burned := filepath.Join(os.Getenv("HOME"), "burned")
		if _, err := os.Stat(burned); err == nil {
			break
		}
		for cpuTime() < burnCPU {
		}
		if err := os.WriteFile(burned, nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
		}
		fmt.Println("probe: burned")
		os.Exit(3)
	case "env":
		for _, e := range os.Environ() {
			fmt.Println("env", e)
		}
	case "call":
		// call SERVICE: serves the NATS Micro service "front", whose
		// handler asks SERVICE, over the same connection, and answers
		// with its reply.
		call(os.Args[2], term)
	}
	fmt.Println("probe: ready")
	<-term
	fmt.Println("probe: bye")
}

// call serves "front" until term, on the connection the runner gives
// the app, forwarding each request's body to service as a POST to /hello/.
func call(service string, term <-chan os.Signal) {
	nc, err := consumer.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, "http://"+service+"/hello/", r.Body)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "probe: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-term
		cancel()
	}()
	fmt.Println("probe: calling", service)
	if err := consumer.Serve(ctx, nc, consumer.Config{Name: "front"}, front); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// burnCPU is the CPU time the probe's burn mode spends; the runner's
// tests hold the same figure.
const burnCPU = 300 * time.Millisecond

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// forward copies each connection of ln to and from target.
func forward(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer t.Close()
			go io.Copy(t, c)
			io.Copy(c, t)
		}()
	}
}
