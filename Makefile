# cosmosrep: PGXS build
EXTENSION  = cosmosrep
EXTVERSION = 0.1

MODULE_big = cosmosrep
OBJS = \
	src/apply_batch.o \
	src/apply_change.o \
	src/apply_message.o \
	src/apply_relation.o \
	src/apply_worker.o \
	src/catalog.o \
	src/conflict.o \
	src/conflict_log.o \
	src/consistency.o \
	src/cosmosrep.o \
	src/failover.o \
	src/feed.o \
	src/hlc.o \
	src/names.o \
	src/join.o \
	src/join_copy.o \
	src/output_plugin.o \
	src/peers.o \
	src/protocol.o \
	src/remote.o \
	src/row_trigger.o \
	src/run_as.o \
	src/launcher.o \
	src/membership.o \
	src/shmem.o \
	src/signing.o \
	src/sql_api.o \
	src/stability.o \
	src/staleness.o \
	src/status.o \
	src/tables.o \
	src/tombstone.o

DATA = sql/cosmosrep--$(EXTVERSION).sql

PG_CPPFLAGS = -I$(srcdir)/src -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

# pg_regress runs against a temporary instance configured for cosmosrep
REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/cosmosrep--%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-instance=./tmp_regress --temp-config=$(srcdir)/test/regress.conf

# multi-region and pgTAP tests (prove, PostgreSQL::Test::Cluster)
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_check

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild everything when one changes
$(OBJS): $(wildcard $(srcdir)/src/*.h)

# after PGXS, which resets PROVE_FLAGS
PROVE_FLAGS += -I $(srcdir)/test/perl
