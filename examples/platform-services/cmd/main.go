// Command platform is the example platform monolith that devsup supervises.
// It serves /healthz and /version and exits cleanly on SIGTERM, finishing the requests in flight.
//
// Sockets: when devsup hands it listening sockets (platform.binary.listen: LISTEN_FDS and
// LISTEN_PID naming this process, the sd_listen_fds(3) convention) it serves on those, so a
// reload or restart refuses no connection; otherwise it binds PLATFORM_ADDR itself.
// Readiness: when NOTIFY_SOCKET is set (ready: {notify: true}) it sends READY=1 once it accepts.
//
// `platform -healthcheck` exits 0 when the server on PLATFORM_ADDR's port answers /healthz with
// 200: a scratch image has no curl, so the container healthcheck runs the binary itself.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// version is what /version serves; the end-to-end tests and benchmarks edit this line.
const version = "v1"

// drainTimeout bounds how long SIGTERM waits for requests in flight (devsup's stop_timeout is 5 s).
const drainTimeout = 4 * time.Second

func main() {
	addr := os.Getenv("PLATFORM_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	if len(os.Args) > 1 && os.Args[1] == "-healthcheck" {
		os.Exit(healthcheck(addr))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, version)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	listeners, err := inheritedListeners()
	if err != nil {
		log.Fatalf("inherited sockets: %v", err)
	}
	if len(listeners) == 0 {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("listen: %v", err)
		}
		listeners = []net.Listener{l}
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var serving sync.WaitGroup
	for _, l := range listeners {
		serving.Add(1)
		go func(l net.Listener) {
			defer serving.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Fatalf("serve %s: %v", l.Addr(), err)
			}
		}(l)
		log.Printf("platform %s listening on %s", version, l.Addr())
	}
	// The sockets accept from the moment they listen (inherited ones long before), so the
	// process is ready now.
	sdNotify(fmt.Sprintf("READY=1\nSTATUS=serving %s on %d socket(s)", version, len(listeners)))

	<-stop
	log.Printf("shutting down")
	sdNotify("STOPPING=1")
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	// Shutdown closes this process's listeners (devsup and a successor keep theirs open) and
	// waits for the requests in flight.
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
	serving.Wait()
	log.Printf("stopped")
}

// inheritedListeners returns the sockets passed as fds 3.. (sd_listen_fds(3)): only when
// LISTEN_PID names this process, so a child of ours never takes them for its own.
func inheritedListeners() ([]net.Listener, error) {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	count, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || count <= 0 {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	var listeners []net.Listener
	for i := 0; i < count; i++ {
		name := fmt.Sprintf("LISTEN_FD_%d", 3+i)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		f := os.NewFile(uintptr(3+i), name)
		l, err := net.FileListener(f)
		f.Close() // FileListener holds its own duplicate
		if err != nil {
			return nil, fmt.Errorf("fd %d (%s): %w", 3+i, name, err)
		}
		listeners = append(listeners, l)
	}
	return listeners, nil
}

// sdNotify sends one sd_notify(3) message to NOTIFY_SOCKET, when devsup (or systemd) set one.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		log.Printf("notify: %v", err)
		return
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		log.Printf("notify: %v", err)
	}
}

// healthcheck probes the local server; the timeout keeps a hung server within one health interval.
func healthcheck(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		log.Printf("bad PLATFORM_ADDR %q: %v", addr, err)
		return 1
	}
	client := http.Client{Timeout: 800 * time.Millisecond}
	resp, err := client.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		log.Printf("healthcheck: %v", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Printf("healthcheck: status %d", resp.StatusCode)
		return 1
	}
	return 0
}
