# resnetd build. `make help` lists the targets.
CC       ?= gcc
BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
WARN     := -Wall -Wextra -Werror
CFLAGS   ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -fvect-cost-model=dynamic -fopenmp -I$(BLAS_INC) -Icore -Iserver $(shell pkg-config --cflags hdf5) -MMD -MP
LDLIBS   := -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -ljansson -lpng -ljpeg -lz $(shell pkg-config --libs hdf5) -lpthread -lm -fopenmp
SERVER_LIBS := -lsqlite3 -lmicrohttpd -larchive -lcurl -lcrypto
BUILD    ?= build

CORE_SRC   := $(wildcard core/*.c)
SERVER_SRC := $(wildcard server/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
TESTLIB_SRC:= tests/unit/testutil.c
TOOL_SRC   := $(wildcard tools/*.c)
TOOL_BIN   := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)

CORE_OBJ   := $(CORE_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
# everything of server/ but main(), for the unit tests
SERVERLIB_OBJ := $(filter-out $(BUILD)/server/main.o,$(SERVER_OBJ))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TESTLIB_OBJ:= $(TESTLIB_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps test unit asan bench demo run clean help web
# keep the objects of chained rules (tests, tools, benchmarks) between builds
.SECONDARY:
BENCH_BIN  := $(BUILD)/bench/bench_train $(BUILD)/bench/bench_loader

# the dashboard's third-party files, from npm (web/package-lock.json), copied
# next to the page; the daemon serves web/
WEB_VENDOR := web/vendor/uPlot.iife.min.js web/vendor/uPlot.min.css

all: $(BUILD)/resnetd $(UNIT_BIN) $(TOOL_BIN) $(BENCH_BIN) $(WEB_VENDOR)

web: $(WEB_VENDOR)

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web/vendor/%: web/node_modules/.package-lock.json
	@mkdir -p web/vendor
	cp web/node_modules/uplot/dist/$* $@


help:
	@echo "make deps   install missing Debian packages (tools/debian-packages.txt)"
	@echo "make all    build build/resnetd, the unit tests and the benchmarks"
	@echo "make test   deps + build + every test (unit, PyTorch reference)"
	@echo "make asan   unit tests, and the daemon's API tests, under address+undefined sanitizers"
	@echo "make bench  resnetd vs PyTorch, side by side (writes bench/last.json)"
	@echo "make run    build and start the daemon with the defaults (127.0.0.1:8080, data in ./var)"
	@echo "make demo   set up, start the daemon and run the pretrain-then-fine-tune demo through the API"

deps:
	@tools/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libresnetd.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(BUILD)/libresnetd-server.a: $(SERVERLIB_OBJ)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(BUILD)/resnetd: $(BUILD)/server/main.o $(BUILD)/libresnetd-server.a $(BUILD)/libresnetd.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS) $(SERVER_LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(TESTLIB_OBJ) $(BUILD)/libresnetd-server.a $(BUILD)/libresnetd.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS) $(SERVER_LIBS) -lcmocka

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(BUILD)/libresnetd.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libresnetd.a
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

test: deps all
	@tests/run.sh $(BUILD)

unit: all
	@tests/run.sh $(BUILD) unit

asan: deps
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	@tests/run.sh build-asan unit
	@echo "== the daemon's black-box tests against the sanitized build/resnetd"
	@RESNETD_BUILD_DIR=build-asan ASAN_OPTIONS=abort_on_error=1 /usr/bin/python3 -m unittest tests/api/test_api.py tests/api/test_restart.py

bench: deps all
	@bench/run.sh $(BUILD)

run: all
	$(BUILD)/resnetd serve

demo: deps all
	@tools/demo.sh $(BUILD)

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
