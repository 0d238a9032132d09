// Command standin plays every service of the offline demo stack (redpanda, postgres, traefik, emqx,
// ai-inference, e2e-runner) so that the stack runs with nothing pulled: one small static binary in
// a FROM-scratch image, its role chosen by environment variables.
//
// Subcommands:
//
//	standin [serve]    HTTP server on STANDIN_ADDR (default :8080)
//	standin healthcheck  exit 0 when this container's /healthz answers 200 (scratch has no curl)
//	standin e2e        GET every URL in E2E_TARGETS (comma separated); exit 0 when all answer 2xx
//
// serve endpoints: GET /healthz, GET / (role), POST /fail and POST /recover (turn health off and
// back on, for tests of unhealthy-service handling), PUT and GET /data/<key> (files under
// STANDIN_DATA_DIR, for tests that prove a named volume keeps its data).
//
// serve environment: STANDIN_ROLE (a name for logs), STANDIN_FAIL_HEALTH=1 (unhealthy from the
// start), STANDIN_EXIT_AFTER=N (exit with status 1 after N seconds), STANDIN_DATA_DIR.
// e2e environment: E2E_TARGETS, E2E_FAIL=1 (fail on purpose, to test the failing path),
// E2E_TIMEOUT (seconds to keep retrying the targets, default 10).
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultAddr is where serve listens when STANDIN_ADDR is unset; compose maps it to distinct host ports.
const defaultAddr = ":8080"

// validKey keeps /data keys to plain file names, so no request can escape the data directory.
var validKey = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	cmd := "serve"
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	switch cmd {
	case "serve":
		os.Exit(serve())
	case "healthcheck", "-healthcheck":
		os.Exit(healthcheck())
	case "e2e":
		os.Exit(e2e())
	default:
		fmt.Fprintf(os.Stderr, "usage: standin [serve|healthcheck|e2e]\n")
		os.Exit(2)
	}
}

func listenAddr() string {
	if addr := os.Getenv("STANDIN_ADDR"); addr != "" {
		return addr
	}
	return defaultAddr
}

func serve() int {
	role := os.Getenv("STANDIN_ROLE")
	if role == "" {
		role = "standin"
	}
	dataDir := os.Getenv("STANDIN_DATA_DIR")
	var healthy atomic.Bool
	healthy.Store(os.Getenv("STANDIN_FAIL_HEALTH") != "1")

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		setHealth(w, r, &healthy, false, role)
	})
	mux.HandleFunc("/recover", func(w http.ResponseWriter, r *http.Request) {
		setHealth(w, r, &healthy, true, role)
	})
	mux.HandleFunc("/data/", func(w http.ResponseWriter, r *http.Request) {
		handleData(w, r, dataDir)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s\n", role)
	})
	srv := &http.Server{Addr: listenAddr(), Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	// PID 1 in a container ignores SIGTERM unless it installs a handler: without this every
	// `docker stop` would wait out the full grace period.
	done := make(chan int, 1)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		log.Printf("role=%s event=stopping", role)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		done <- 0
	}()
	if s := os.Getenv("STANDIN_EXIT_AFTER"); s != "" {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil {
			log.Printf("role=%s event=bad_env STANDIN_EXIT_AFTER=%q", role, s)
			return 2
		}
		time.AfterFunc(time.Duration(secs*float64(time.Second)), func() {
			log.Printf("role=%s event=exit_after seconds=%s", role, s)
			os.Exit(1)
		})
	}

	log.Printf("role=%s event=listening addr=%s healthy=%t data_dir=%q", role, srv.Addr, healthy.Load(), dataDir)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Printf("role=%s event=listen_failed error=%q", role, err)
		return 1
	}
	return <-done
}

func setHealth(w http.ResponseWriter, r *http.Request, healthy *atomic.Bool, to bool, role string) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	healthy.Store(to)
	log.Printf("role=%s event=health_set healthy=%t", role, to)
	fmt.Fprintf(w, "healthy=%t\n", to)
}

func handleData(w http.ResponseWriter, r *http.Request, dataDir string) {
	if dataDir == "" {
		http.Error(w, "no STANDIN_DATA_DIR", http.StatusNotFound)
		return
	}
	key := strings.TrimPrefix(r.URL.Path, "/data/")
	if !validKey.MatchString(key) {
		http.Error(w, "bad key", http.StatusBadRequest)
		return
	}
	path := filepath.Join(dataDir, key)
	switch r.Method {
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = os.WriteFile(path, body, 0o644)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodGet:
		body, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			http.Error(w, "no such key", http.StatusNotFound)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(body)
	default:
		http.Error(w, "GET or PUT", http.StatusMethodNotAllowed)
	}
}

func healthcheck() int {
	_, port, err := net.SplitHostPort(listenAddr())
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad STANDIN_ADDR: %v\n", err)
		return 1
	}
	// Short timeout: a hung server must count as unhealthy within one docker health interval.
	client := http.Client{Timeout: 800 * time.Millisecond}
	resp, err := client.Get("http://127.0.0.1:" + port + "/healthz")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "status %d\n", resp.StatusCode)
		return 1
	}
	return 0
}

func e2e() int {
	if os.Getenv("E2E_FAIL") == "1" {
		log.Printf("event=e2e_failed reason=%q", "E2E_FAIL=1")
		return 1
	}
	timeout := 10.0
	if s := os.Getenv("E2E_TIMEOUT"); s != "" {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			timeout = v
		}
	}
	deadline := time.Now().Add(time.Duration(timeout * float64(time.Second)))
	client := http.Client{Timeout: 2 * time.Second}
	for _, target := range strings.Split(os.Getenv("E2E_TARGETS"), ",") {
		target = strings.TrimSpace(target)
		if target == "" {
			continue
		}
		// Retry until the deadline: depends_on only guarantees health, not that every
		// network path is routable in the first instant.
		for {
			err := get(&client, target)
			if err == nil {
				log.Printf("event=e2e_ok target=%s", target)
				break
			}
			if time.Now().After(deadline) {
				log.Printf("event=e2e_failed target=%s error=%q", target, err)
				return 1
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	log.Printf("event=e2e_passed")
	return 0
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
