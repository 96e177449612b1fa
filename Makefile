# citynode: `make demo` and `make test` work as the first command on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
MOSQ    := $(shell command -v mosquitto 2>/dev/null || ls /usr/sbin/mosquitto 2>/dev/null)

.PHONY: all setup test demo bench mosquitto clean esp32-unix typecheck firmware-image

all: test

# The venv is made once; a changed pyproject.toml (new pins) reinstalls, nothing else does.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# Tests and CI always use a real Mosquitto. As root we install it; otherwise we say how.
mosquitto:
	@if [ -z "$(MOSQ)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing mosquitto (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	  else \
	    echo "Mosquitto is missing. Run: sudo apt-get install -y mosquitto mosquitto-clients"; exit 1; \
	  fi; \
	fi

# The virtual ESP32 (32-bit unix port, single-precision floats, firmware frozen in) from
# MICROPY_SRC or ../shared/micropython/, else the pinned commit fetched once (MICROPY_GIT_URL);
# cached, rebuilt when the firmware or source changes. Without a source (the fetch failed too)
# it says why in one line and the unix-port tests run on the 64-bit port only.
esp32-unix:
	@tools/esp32-unix.sh >/dev/null

# A real board's image with the firmware frozen in (needs ESP-IDF: docs/esp32.md)
BOARD ?= ESP32_GENERIC
firmware-image:
	@BOARD=$(BOARD) tools/firmware-image.sh

# pyright over every file a board runs, against the ESP32 (and ESP32-S3) MicroPython stubs
typecheck: $(STAMP)
	$(BIN)/python tools/typecheck.py

test: $(STAMP) mosquitto esp32-unix
	$(BIN)/python -m pytest

# Mosquitto when it is there; otherwise the embedded Python broker (amqtt), installed on demand.
demo: $(STAMP)
	@if [ -z "$(MOSQ)" ]; then $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[broker]'; fi
	$(BIN)/python -m citynode.demo

bench: $(STAMP) mosquitto
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info host_tools/*.egg-info .pytest_cache demo-flash bench/out
