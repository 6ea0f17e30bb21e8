package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/narun/narun/applets/internal/supervisor"
	"golang.org/x/sys/unix"
)

// errOwnerUnknown says that who listens on a port could not be told,
// most often because /proc of a process could not be read: the check then
// goes on as if it had not asked, rather than fail a healthy app.
var errOwnerUnknown = errors.New("owner of the listener unknown")

// portOwner tells whether the socket that takes connections to
// 127.0.0.1:port belongs to an instance. On the host network another
// program may hold the app's port; a check that only connects would then
// find that program healthy while the app crash-loops on EADDRINUSE. It
// remembers the last owner it had to look for, so a port held for a whole
// start grace is not paid for with a scan of all /proc every 100ms.
type portOwner struct {
	mu   sync.Mutex
	last lastOwner
}

type lastOwner struct {
	inode uint64
	pid   int
	comm  string
}

const procDir = "/proc"

// check returns nil when the listener on port is held by a process of the
// instance t names (its process, its descendants, the processes of its
// cgroup (t.Procs) or, for a plain exec instance, its process group), or
// when nothing listens there, so the connection itself reports it. When
// another process holds it, the error names that process. errOwnerUnknown
// means the instance's processes could not all be read.
func (o *portOwner) check(ctx context.Context, t supervisor.Target, port int) error {
	inodes, v6loop, err := o.loopbackListeners(port)
	if err != nil {
		return fmt.Errorf("%w: %w", errOwnerUnknown, err)
	}
	if len(inodes) == 0 && v6loop {
		// The connection would only be refused, which the app's own
		// "listening on localhost:port" seems to contradict.
		return fmt.Errorf("nothing listens on 127.0.0.1:%d, which the check and the gateway's requests reach, but something does on [::1]:%d: listen on 127.0.0.1 or on every address (\"localhost\" may be ::1 first)", port, port)
	}
	if len(inodes) == 0 {
		return nil
	}
	mine, complete := o.heldByTree(t.PID, inodes)
	if mine {
		return nil
	}
	var procsErr error
	if t.Procs != nil {
		// A daemon (setsid, a double fork) is in neither the tree nor
		// the process group, but its cgroup is the instance's.
		var procs []int
		procs, procsErr = t.Procs()
		for _, p := range procs {
			_, has, err := o.holds(p, inodes)
			if has {
				return nil
			}
			complete = complete && !errors.Is(err, fs.ErrPermission)
		}
	}
	owner, found := o.findOwner(ctx, inodes)
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case found && owner.pgid == t.PID:
		// A process that left the tree (its parent exited) but not the
		// instance's process group is still the instance's.
		return nil
	case found && procsErr != nil:
		// The owner may be one of the processes that could not be listed.
		return fmt.Errorf("%w: list the instance's processes: %w", errOwnerUnknown, procsErr)
	case found:
		return fmt.Errorf("port %d is held by another process (pid %d, %s), not by this instance", port, owner.pid, owner.comm)
	case !complete:
		return fmt.Errorf("%w: a process of the instance does not let its descriptors be read", errOwnerUnknown)
	}
	return fmt.Errorf("port %d is held by another process, not by this instance", port)
}

// loopbackListeners returns the inodes of the listening sockets that a
// connection to 127.0.0.1:port can reach, of the most specific address
// only: the kernel prefers a socket bound to 127.0.0.1 to one bound to
// 0.0.0.0, and IPv4 sockets to IPv6 ones. A socket on ::1 never gets such
// a connection; v6loop says whether one listens on port. /proc/net is the
// runner's network namespace, which is the one of the instances it checks
// this way.
func (o *portOwner) loopbackListeners(port int) (inodes []uint64, v6loop bool, err error) {
	best, rank := []uint64(nil), 0
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := os.ReadFile(filepath.Join(procDir, f))
		if err != nil {
			if f == "net/tcp6" && errors.Is(err, fs.ErrNotExist) {
				// A kernel without IPv6.
				continue
			}
			return nil, false, err
		}
		err = eachListener(b, func(addr netip.Addr, p int, inode uint64) {
			if p != port || inode == 0 {
				return
			}
			v6loop = v6loop || addr == netip.IPv6Loopback()
			r := loopbackRank(addr)
			switch {
			case r == 0 || r < rank:
			case r > rank:
				best, rank = []uint64{inode}, r
			default:
				best = append(best, inode)
			}
		})
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", f, err)
		}
	}
	return best, v6loop, nil
}

// loopbackRank orders the addresses a listener on which takes connections
// to 127.0.0.1, most specific highest; 0 for those that do not.
func loopbackRank(a netip.Addr) int {
	loop := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	switch {
	case a == loop:
		return 4
	case a == netip.IPv4Unspecified():
		return 3
	case a.Is4In6() && a.Unmap() == loop:
		return 2
	case a == netip.IPv6Unspecified():
		// Unless the socket is IPV6_V6ONLY, which /proc does not say.
		return 1
	}
	return 0
}

// eachListener calls f for each socket in state LISTEN of a /proc/net/tcp
// or tcp6 table.
func eachListener(table []byte, f func(addr netip.Addr, port int, inode uint64)) error {
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Buffer(make([]byte, 0, 512), 64<<10)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when
		// retrnsmt uid timeout inode ...
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		host, port, ok := strings.Cut(fields[1], ":")
		if !ok {
			return fmt.Errorf("malformed local address %q", fields[1])
		}
		addr, err := procAddr(host)
		if err != nil {
			return err
		}
		p, err := strconv.ParseUint(port, 16, 16)
		if err != nil {
			return fmt.Errorf("malformed port %q", port)
		}
		inode, err := strconv.ParseUint(fields[9], 10, 64)
		if err != nil {
			return fmt.Errorf("malformed inode %q", fields[9])
		}
		f(addr, int(p), inode)
	}
	return sc.Err()
}

// procAddr decodes an address of /proc/net/tcp*: the kernel prints each
// 32-bit word of it in hex, in the machine's byte order.
func procAddr(h string) (netip.Addr, error) {
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, fmt.Errorf("malformed address %q", h)
	}
	out := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(out[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	a, _ := netip.AddrFromSlice(out)
	return a, nil
}

// heldByTree looks for the sockets in the open files of pid and its
// descendants. complete is false when one of them could not be read.
func (o *portOwner) heldByTree(pid int, inodes []uint64) (mine, complete bool) {
	complete = true
	var parents map[int][]int // built from all of /proc, if the kernel has no children files
	seen := map[int]bool{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		_, has, err := o.holds(p, inodes)
		switch {
		case has:
			return true, true
		case errors.Is(err, fs.ErrPermission):
			complete = false
		}
		kids, err := o.children(p)
		if errors.Is(err, errNoChildrenFile) {
			if parents == nil {
				parents = o.parents()
			}
			kids, err = parents[p], nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			complete = false
		}
		queue = append(queue, kids...)
	}
	return false, complete
}

var errNoChildrenFile = errors.New("no /proc children file")

// children lists the children of pid from the children file of each of
// its threads.
func (o *portOwner) children(pid int) ([]int, error) {
	task := filepath.Join(procDir, strconv.Itoa(pid), "task")
	tids, err := readDirNames(task)
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, tid := range tids {
		b, err := os.ReadFile(filepath.Join(task, tid, "children"))
		switch {
		case errors.Is(err, fs.ErrNotExist) && tid == strconv.Itoa(pid):
			// The main thread lives as long as the process: only a kernel
			// built without CONFIG_PROC_CHILDREN lacks the file.
			return nil, errNoChildrenFile
		case err != nil:
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids, nil
}

// parents maps each process to its children, from the stat of every
// process.
func (o *portOwner) parents() map[int][]int {
	m := map[int][]int{}
	for _, p := range o.pids() {
		if st, err := o.stat(p); err == nil {
			m[st.ppid] = append(m[st.ppid], p)
		}
	}
	return m
}

type procStat struct {
	ppid, pgid int
}

func (o *portOwner) stat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	f, err := statFields(b)
	if err != nil {
		return procStat{}, err
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return procStat{ppid: ppid, pgid: pgid}, nil
}

// pids lists the processes of the proc mount.
func (o *portOwner) pids() []int {
	names, _ := readDirNames(procDir)
	var out []int
	for _, n := range names {
		if p, err := strconv.Atoi(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// holds returns which of the sockets pid has open, if any. An error is
// fs.ErrPermission when its descriptors may not be read, fs.ErrNotExist
// when it is gone.
func (o *portOwner) holds(pid int, inodes []uint64) (uint64, bool, error) {
	dir := filepath.Join(procDir, strconv.Itoa(pid), "fd")
	d, err := os.Open(dir)
	if err != nil {
		return 0, false, err
	}
	defer d.Close()
	fds, err := d.Readdirnames(-1)
	if err != nil {
		return 0, false, err
	}
	dfd := int(d.Fd())
	buf := make([]byte, 64)
	denied := false
	for _, fd := range fds {
		n, err := unix.Readlinkat(dfd, fd, buf)
		if err != nil {
			// A descriptor closed since the listing is no loss; one that
			// may not be read may be the one.
			denied = denied || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
			continue
		}
		if inode, ok := socketInode(buf[:n]); ok && slices.Contains(inodes, inode) {
			return inode, true, nil
		}
	}
	if denied {
		return 0, false, fs.ErrPermission
	}
	return 0, false, nil
}

// socketInode reads the inode of a descriptor link "socket:[N]".
func socketInode(link []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != ']' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:len(rest)-1]), 10, 64)
	return n, err == nil
}

type ownerProc struct {
	pid, pgid int
	comm      string
}

// findOwner looks through every process for one that holds a socket,
// starting with the owner found last. Processes it may not read are
// skipped: found is false when none of those it could read holds one.
func (o *portOwner) findOwner(ctx context.Context, inodes []uint64) (ownerProc, bool) {
	o.mu.Lock()
	last := o.last
	o.mu.Unlock()
	if last.pid > 0 && slices.Contains(inodes, last.inode) {
		if _, has, _ := o.holds(last.pid, []uint64{last.inode}); has {
			if st, err := o.stat(last.pid); err == nil {
				return ownerProc{pid: last.pid, pgid: st.pgid, comm: last.comm}, true
			}
		}
	}
	for _, p := range o.pids() {
		if ctx.Err() != nil {
			return ownerProc{}, false
		}
		inode, has, _ := o.holds(p, inodes)
		if !has {
			continue
		}
		st, err := o.stat(p)
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join(procDir, strconv.Itoa(p), "comm"))
		owner := ownerProc{pid: p, pgid: st.pgid, comm: strings.TrimSpace(string(comm))}
		if owner.comm == "" {
			owner.comm = "unknown command"
		}
		o.mu.Lock()
		o.last = lastOwner{inode: inode, pid: p, comm: owner.comm}
		o.mu.Unlock()
		return owner, true
	}
	return ownerProc{}, false
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}
