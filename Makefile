# make run   - set up .venv, make an instance in ./var with a demo account, serve it
# make test  - run the whole test suite in the same .venv
# Nothing is installed outside .venv.

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/schoolsuite
INSTANCE := var
CONFIG   := $(INSTANCE)/schoolsuite.toml
DOMAIN   := school.example
DEMO     := demo@$(DOMAIN)

.PHONY: run test demo-user

# A stamp file, so the venv is only rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(CONFIG): | $(VENV)/.installed
	$(CLI) init $(INSTANCE) --domain $(DOMAIN) --hostname localhost

# A fresh random password on every run: the account is created, or its password reset.
demo-user: $(VENV)/.installed $(CONFIG)
	@pw=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(12))'); \
	if $(CLI) -c $(CONFIG) user show $(DEMO) >/dev/null 2>&1; then \
	  printf '%s\n' "$$pw" | $(CLI) -c $(CONFIG) user passwd $(DEMO) --password-stdin >/dev/null; \
	else \
	  printf '%s\n' "$$pw" | $(CLI) -c $(CONFIG) user add $(DEMO) --name "Demo Teacher" --password-stdin >/dev/null; \
	fi; \
	echo; \
	echo "  demo account: $(DEMO)"; \
	echo "  password:     $$pw"; \
	echo "  IMAP 127.0.0.1:1143 (STARTTLS), IMAPS :1993, submission :1587 (STARTTLS), submissions :1465"; \
	echo "  MX :1025, HTTPS https://localhost:8443/ (certificate: $(INSTANCE)/tls/cert.pem)"; \
	echo "  metrics http://127.0.0.1:9464/metrics"; \
	echo

run: demo-user
	$(CLI) serve -c $(CONFIG)

test: $(VENV)/.installed
	$(PY) -m pytest -q
