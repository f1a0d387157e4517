# switchyard — developer entry points.
#
#   make deps    install build and test prerequisites (cmake, chromium, firefox-esr) if missing
#   make build   release build of both binaries
#   make run     demo: three switchyard-echo backends + switchyard on conf/switchyard.yaml
#   make test    all tests (cargo test --all-targets)
#   make bench   benchmarks (tests/bench/run.sh, then tests/bench/slow_backend.py)
#   make install the release binaries, upgrade script, systemd unit and (if absent)
#                the config; DESTDIR, PREFIX (/usr/local), SYSCONFDIR (/etc), UNITDIR
#   make uninstall  the files `make install` put in place, except config and state
#   make test-systemd  the unit under a real systemd in a container (root; tests/systemd/run.sh)
#   make fmt     format the code
#   make lint    clippy, warnings are errors
#   make clean   remove build artefacts

CARGO ?= cargo

# `make install` layout (GNU conventions; DESTDIR is prepended to every path).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
DOCDIR ?= $(PREFIX)/share/doc/switchyard
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
# where `make install` takes the binaries from
RELEASE_DIR ?= target/release

.PHONY: all deps build run test test-systemd bench fmt lint clean install uninstall

all: build

# $(call need,COMMANDS,PACKAGE,WHY): Debian's PACKAGE when none of COMMANDS
# is on the PATH (installed as root, else the exact command is printed).
define need
	@found=$$(for c in $(1); do command -v $$c 2>/dev/null && break; done); \
	if [ -n "$$found" ]; then \
		echo "deps: $(2) found at $$found"; \
	elif [ "$$(id -u)" = "0" ]; then \
		echo "deps: installing $(2)$(3)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(2); \
	else \
		echo "deps: $(2) is missing$(3); install it with:" >&2; \
		echo "  sudo apt-get update && sudo apt-get install -y $(2)" >&2; \
		exit 1; \
	fi
endef

# pingora's native dependencies need cmake to build.
# The status page tests drive Debian's chromium (headless, DevTools protocol)
# and firefox-esr (headless, WebDriver BiDi; no geckodriver).
deps:
	$(call need,cmake,cmake,)
	$(call need,chromium chromium-browser,chromium, (status page tests))
	$(call need,firefox-esr firefox,firefox-esr, (status page tests))

build: deps
	$(CARGO) build --release --bins

run: deps build
	./deploy/demo.sh

test: deps
	$(CARGO) test --all-targets

bench: build
	@if [ -x tests/bench/run.sh ]; then \
		tests/bench/run.sh; \
	elif [ -f tests/bench/run.sh ]; then \
		bash tests/bench/run.sh; \
	else \
		echo "bench: not yet available (tests/bench/run.sh does not exist)"; \
	fi
	python3 tests/bench/slow_backend.py --switchyard target/release/switchyard

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

test-systemd: build
	tests/systemd/run.sh

# Installs the release binaries (built by `make build`, not here: `sudo make
# install` needs no toolchain), the upgrade script, the unit with this
# layout's paths, the README and, unless one exists, the config. Binaries and
# script are replaced atomically (written aside, then renamed), so a running
# instance and a concurrent `systemctl reload` never see a partial file.
install:
	@for b in switchyard switchyard-echo; do \
		if [ ! -x "$(RELEASE_DIR)/$$b" ]; then \
			echo "install: $(RELEASE_DIR)/$$b not found; run 'make build' first" >&2; exit 1; \
		fi; \
	done
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LIBDIR)/switchyard" "$(DESTDIR)$(DOCDIR)" \
		"$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSCONFDIR)/switchyard"
	for b in switchyard switchyard-echo; do \
		install -m 0755 "$(RELEASE_DIR)/$$b" "$(DESTDIR)$(BINDIR)/.$$b.new" && \
		mv -f "$(DESTDIR)$(BINDIR)/.$$b.new" "$(DESTDIR)$(BINDIR)/$$b" || exit 1; \
	done
	install -m 0755 deploy/upgrade.sh "$(DESTDIR)$(LIBDIR)/switchyard/.upgrade.sh.new"
	mv -f "$(DESTDIR)$(LIBDIR)/switchyard/.upgrade.sh.new" "$(DESTDIR)$(LIBDIR)/switchyard/upgrade.sh"
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/lib/|$(LIBDIR)/|g' \
		-e 's|/usr/local/share/doc/switchyard/|$(DOCDIR)/|g' -e 's|/etc/switchyard/|$(SYSCONFDIR)/switchyard/|g' \
		deploy/switchyard.service > "$(DESTDIR)$(UNITDIR)/switchyard.service.new"
	@unit="$(DESTDIR)$(UNITDIR)/switchyard.service"; \
	if cmp -s "$$unit.new" "$$unit" 2>/dev/null; then \
		rm -f "$$unit.new"; \
	else \
		chmod 0644 "$$unit.new" && mv -f "$$unit.new" "$$unit" && \
		echo "install: installed $$unit (run systemctl daemon-reload)"; \
	fi
	install -m 0644 README.md "$(DESTDIR)$(DOCDIR)/README.md"
	@conf="$(DESTDIR)$(SYSCONFDIR)/switchyard/switchyard.yaml"; \
	if [ -e "$$conf" ]; then \
		echo "install: keeping the existing $$conf (the shipped one is deploy/switchyard.yaml)"; \
	else \
		install -m 0644 deploy/switchyard.yaml "$$conf" && echo "install: installed $$conf"; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
		echo "install: now edit $(SYSCONFDIR)/switchyard/switchyard.yaml, then"; \
		echo "  systemctl daemon-reload && systemctl enable --now switchyard     (first install)"; \
		echo "  systemctl daemon-reload && systemctl reload switchyard           (upgrade)"; \
	fi

# Leaves the config (SYSCONFDIR/switchyard) and the state, which systemd
# keeps in /var/lib/private/switchyard.
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/switchyard" "$(DESTDIR)$(BINDIR)/switchyard-echo" \
		"$(DESTDIR)$(LIBDIR)/switchyard/upgrade.sh" "$(DESTDIR)$(UNITDIR)/switchyard.service" \
		"$(DESTDIR)$(DOCDIR)/README.md"
	-rmdir "$(DESTDIR)$(LIBDIR)/switchyard" "$(DESTDIR)$(DOCDIR)" 2>/dev/null
