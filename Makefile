# A thin facade over the go tool. `make help` lists the targets.
GO      ?= go
BIN     := bin
DEMO    := $(CURDIR)/demo-run
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help build man completion install test test-short test-fuse lint bench bench-deps demo deps clean

help:
	@echo "make build       build bin/rangefs and bin/rangefs-testserver"
	@echo "make test        vet, gofmt check, all tests with -race (FUSE tests need /dev/fuse)"
	@echo "make test-short  the same without the long crash loops"
	@echo "make test-fuse   only the mount tests"
	@echo "make lint        gofmt and go vet"
	@echo "make man         generate the man pages into man/ from the flag definitions"
	@echo "make completion  generate bash, zsh and fish completions into completion/"
	@echo "make install     install rangefs, mount.fuse.rangefs, man pages, completions (PREFIX, DESTDIR)"
	@echo "make demo        install fuse3 if missing, serve a local file, get it, mount it, check sha256"
	@echo "make bench-deps  install the peers the benchmark compares against (Debian)"
	@echo "make bench       rangefs vs aria2c, axel, curl, rclone and httpdirfs on a local nginx"

build:
	$(GO) build -o $(BIN)/rangefs ./cmd/rangefs
	$(GO) build -o $(BIN)/rangefs-testserver ./cmd/rangefs-testserver

PREFIX  ?= /usr/local
DESTDIR ?=

man: build
	rm -rf man && $(BIN)/rangefs gen-man man

completion: build
	mkdir -p completion
	$(BIN)/rangefs completion bash > completion/rangefs.bash
	$(BIN)/rangefs completion zsh > completion/_rangefs
	$(BIN)/rangefs completion fish > completion/rangefs.fish

# mount(8) runs /sbin/mount.fuse.rangefs for a file system of type
# fuse.rangefs (fstab, mount -t): the link to rangefs is that helper.
install: build man completion
	install -D -m 0755 $(BIN)/rangefs $(DESTDIR)$(PREFIX)/bin/rangefs
	install -d $(DESTDIR)/sbin
	ln -sf $(PREFIX)/bin/rangefs $(DESTDIR)/sbin/mount.fuse.rangefs
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -D -m 0644 completion/rangefs.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/rangefs
	install -D -m 0644 completion/_rangefs $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_rangefs
	install -D -m 0644 completion/rangefs.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/rangefs.fish

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: lint
	$(GO) test -race -count=1 -timeout 20m ./...
	@# One core hides fewer scheduling bugs than two: run the engine again on one.
	GOMAXPROCS=1 $(GO) test -race -count=1 -short -timeout 10m ./cache/... ./fetch/... ./fs/...

test-short: lint
	$(GO) test -race -count=1 -short ./...

test-fuse:
	$(GO) test -race -count=1 ./fs/... ./cmd/rangefs/...

deps:
	@command -v fusermount3 >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq fuse3; }

bench-deps:
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq nginx aria2 axel rclone httpdirfs fuse3 ffmpeg sqlite3 unzip python3 fuse-zip archivemount

# BENCH_FLAGS selects rows and conditions, e.g. issue 2's table:
#   make bench BENCH_FLAGS="--only get,aria2c --size 256MiB --cap 10MB"
bench: build
	$(GO) run ./cmd/rangefs-bench --rangefs $(BIN)/rangefs $(BENCH_FLAGS)

# demo: a local range server on a generated 64 MiB file; rangefs get downloads
# it; rangefs mount shows it as a file; both results are checked by sha256.
demo: deps build
	@rm -rf $(DEMO) && mkdir -p $(DEMO)/mnt
	@head -c 64M /dev/urandom > $(DEMO)/movie.bin
	@set -e; cd $(DEMO); \
	  ../$(BIN)/rangefs-testserver --file movie.bin > url.txt & srv=$$!; \
	  trap 'kill $$srv 2>/dev/null; fusermount3 -uz mnt 2>/dev/null || true' EXIT; \
	  for i in $$(seq 50); do [ -s url.txt ] && break; sleep 0.1; done; \
	  url=$$(cat url.txt); want=$$(sha256sum movie.bin | cut -d' ' -f1); \
	  echo "== rangefs get $$url"; \
	  ../$(BIN)/rangefs get -o got.bin "$$url"; \
	  echo "$$want  got.bin" | sha256sum -c; \
	  echo "== rangefs mount $$url mnt"; \
	  ../$(BIN)/rangefs mount --cache-dir cache "$$url" mnt & mnt=$$!; \
	  for i in $$(seq 100); do [ -e mnt/movie.bin ] && break; sleep 0.1; done; \
	  ls -l mnt; \
	  echo "$$want  mnt/movie.bin" | sha256sum -c; \
	  ../$(BIN)/rangefs status mnt; \
	  kill -INT $$mnt; wait $$mnt; echo "== unmounted; demo OK"

clean:
	rm -rf $(BIN) $(DEMO) bench-out man completion
