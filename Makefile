# The two commands of the README:
#   make demo   deploy the platform onto local test hosts (systemd containers)
#   make test   every quality gate: lint, syntax check, unit tests, molecule scenarios
# Every target prepares what it needs itself (venv, Docker engine, base image).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The distribution of the test hosts: make test DISTRO=debian13 (MOLECULE_DISTRO works too).
DISTRO ?= debian12
export MOLECULE_DISTRO ?= $(DISTRO)
export ANSIBLE_FORCE_COLOR ?= 1
export PY_COLORS ?= 1
# One scenario alone while working: make molecule SCENARIO=default
SCENARIO ?=
# What `make test` runs. molecule/hub and molecule/moodle are for working on a hub or the
# Moodle host alone: the hub's tests also run in `default`, against hub1 of the full site,
# and the Moodle host's tests and in-place upgrades in `moodle_ops`.
CI_SCENARIOS := default moodle_ops
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help bootstrap image host-image demo demo-down lint unit molecule test clean

help:
	@echo "make demo       deploy the platform onto three local test hosts"
	@echo "make demo-down  remove the demo hosts"
	@echo "make test       lint + syntax check + unit tests + the molecule scenarios ($(CI_SCENARIOS))"
	@echo "make lint | unit | molecule [SCENARIO=name]   one gate alone"
	@echo "MOLECULE_DISTRO=debian12 (default) | ubuntu2404 | rocky9 (these two need a registry)"

bootstrap:
	@testbed/bootstrap.sh

image: host-image
	@$(VENV)/python testbed/build_notebook_base.py

# The test hosts' systemd image only (make test builds both images as stages).
host-image: bootstrap
	@$(VENV)/python testbed/build_image.py $(MOLECULE_DISTRO)

demo: image
	@start=$$(date +%s); \
	$(VENV)/ansible-playbook testbed/demo_up.yml; \
	$(VENV)/ansible-playbook -i inventories/demo playbooks/site.yml; \
	$(VENV)/python testbed/demo_info.py --seconds $$(( $$(date +%s) - start ))

demo-down: bootstrap
	@$(VENV)/ansible-playbook testbed/demo_down.yml

lint: bootstrap
	@echo "== yamllint"; $(VENV)/yamllint --strict .
	@echo "== ansible-lint (production profile; includes ansible-playbook --syntax-check of every playbook)"
	@$(VENV)/ansible-lint --strict
	@echo "== the demo inventory parses"; $(VENV)/ansible-inventory -i inventories/demo --list >/dev/null
	@echo "== ruff"; $(VENV)/ruff check src tests testbed molecule benchmarks
	@echo "== mypy"; $(VENV)/mypy

unit: bootstrap
	@$(VENV)/pytest

molecule: image
	@if [ -n "$(SCENARIO)" ]; then $(VENV)/molecule test -s $(SCENARIO); \
	else for s in $(CI_SCENARIOS); do start=$$(date +%s); $(VENV)/molecule test -s "$$s" || exit 1; \
	  echo "== scenario $$s: $$(( $$(date +%s) - start )) s"; done; fi

# The host image, the notebook base, lint, unit and the scenarios as stages (two side by
# side: CI has two cores), with a table of their times at the end; see testbed/run_tests.py.
test: bootstrap
	@$(VENV)/python testbed/run_tests.py --scenarios "$(CI_SCENARIOS)"

clean: demo-down
	rm -rf .venv .cache
