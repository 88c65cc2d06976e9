# One virtual environment per checkout; every target installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# FAISS build: cpu (faiss-cpu) or gpu (faiss-gpu, FAISS's CUDA wheel): make test FAISS=gpu
FAISS ?= cpu
STAMP := $(VENV)/.installed-$(FAISS)

.PHONY: demo test venv clean gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# exactly one FAISS distribution: drop any other build before installing this one
	$(BIN)/python -m pip uninstall -q -y faiss-cpu faiss-gpu faiss-gpu-cu12 faiss-gpu-cu11
	rm -f $(VENV)/.installed*
	$(BIN)/python -m pip install -q -e '.[$(FAISS),dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/omnifer demo demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# every GPU code path against its CPU result, on a GPU machine: make gpu-check FAISS=gpu
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) demo
