# The two commands of the README: `make demo` and `make test`.
# Both create .venv, install the CPU build of torch first (an unpinned torch pulls
# several GB of CUDA packages), then the package itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
OUT ?= out/demo

# The vector instructions of the slowest CPU of this machine kind (an AMD EPYC without AVX-512), on any x86 CPU:
# PyTorch's own kernels, oneDNN's convolutions and MKL's products capped at AVX2. `make test` runs the tests of
# `make check` and those marked `numerics` again under them, so a tolerance that holds with one instruction set
# only fails on every machine.
SLOWEST_CPU := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
FAST_TESTS := not integration and not browser

.PHONY: demo test check test-slowest-cpu lint docs install install-dev own-model-pictures microscope-pictures recipe-pictures circuit-pictures chromium clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/filterscope demo --out $(OUT)

test: $(VENV)/.installed-dev chromium lint docs
	$(PY) -m pytest -n auto --dist loadfile --durations=15
	$(MAKE) --no-print-directory test-slowest-cpu

# The numerical tests again with the slowest CPU's instruction set (x86 only: the switches name x86 instructions).
test-slowest-cpu: $(VENV)/.installed-dev
	@if [ "$$(uname -m)" = x86_64 ]; then \
		$(SLOWEST_CPU) $(PY) -m pytest -n auto -q -p no:cacheprovider -m "numerics or ($(FAST_TESTS))"; \
	else echo "test-slowest-cpu: not an x86 CPU, nothing to cap"; fi

# The development loop (under 3 minutes): lint, types and the tests without the slow `integration` and `browser`
# markers.
check: lint
	$(PY) -m pytest -n auto -q -m "$(FAST_TESTS)"

# The docs site (MkDocs + Material + mkdocstrings), offline, warnings as errors, into site/.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The browser tests drive Debian's headless Chromium with Playwright (never `playwright install`).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Lint and type check (part of `make test`, so CI runs them); configuration in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks examples docs
	$(VENV)/bin/mypy

# The docs' "Your own model" pictures: the commands it shows, run on examples/digits.py, as JPEGs in docs/images.
OWN := out/own-model
own-model-pictures: $(VENV)/.installed-dev
	$(PY) examples/digits.py $(OWN)/digit-images
	$(VENV)/bin/filterscope visualize -m examples/digits.py:digits -l relu3 -f 1,3,4,5,7,8,22,30 --relu-override 16 -q -o $(OWN)
	$(VENV)/bin/filterscope top $(OWN)/digit-images -m examples/digits.py:digits -l relu3 -k 5 -o $(OWN)
	$(VENV)/bin/filterscope occlude $(OWN)/digit-images/digit2-is-2.png -m examples/digits.py:digits -l relu3 -k 5 \
		-r "top half=0%,0%,100%,50%" --maps -o $(OWN)
	$(PY) -c "from PIL import Image; import sys; [Image.open(a).convert('RGB').save(b, quality=90) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]" \
		$(OWN)/digits-relu3-grid.png docs/images/own_model_grid.jpg \
		$(OWN)/digit0-is-0+9-relu3-top5.png docs/images/own_model_top5.jpg \
		$(OWN)/digit2-is-2-relu3-sensitivity.png docs/images/own_model_sensitivity.jpg

# The docs' circuit figure: the command it shows, as a JPEG in docs/images.
circuit-pictures: $(VENV)/.installed
	$(VENV)/bin/filterscope circuit efficientnet_lite0 -l _blocks.15 -u 16 --from _blocks.14 -k 6 \
		--json out/circuit/u16.json -q -o out/circuit
	$(PY) -c "from PIL import Image; Image.open('out/circuit/efficientnet_lite0-_blocks.15-u16-from-_blocks.14.png').convert('RGB').save('docs/images/circuit_blocks_15_u16.jpg', quality=88)"

# The docs' microscope screenshots: the browser test photographs the demo's atlas (run `make demo` first).
microscope-pictures: $(VENV)/.installed-dev chromium
	FILTERSCOPE_SCREENSHOT_ATLAS=$(OUT)/atlas $(PY) -m pytest -q tests/microscope/test_browser.py -k screenshots
	$(PY) -c "from PIL import Image; import sys; [Image.open(a).convert('RGB').save(b, quality=85) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]" \
		docs/images/microscope_layer.png docs/images/microscope_layer.jpg docs/images/microscope_unit.png docs/images/microscope_unit.jpg \
		docs/images/microscope_trust.png docs/images/microscope_trust.jpg
	rm docs/images/microscope_layer.png docs/images/microscope_unit.png docs/images/microscope_trust.png

# The docs' recipe comparison figure: the same filters with the paper's recipe and with ours (about 2 minutes).
recipe-pictures: $(VENV)/.installed
	$(PY) examples/recipe_pictures.py docs/images/recipes_paper_vs_filterscope.jpg --recipes paper,filterscope

clean:
	rm -rf $(VENV) out build site src/*.egg-info .pytest_cache
