# cosmosrep: PGXS build
EXTENSION  = cosmosrep
EXTVERSION = 0.2

MODULE_big = cosmosrep
OBJS = \
	src/apply_batch.o \
	src/apply_change.o \
	src/apply_message.o \
	src/apply_spill.o \
	src/apply_stream.o \
	src/apply_relation.o \
	src/apply_worker.o \
	src/catalog.o \
	src/conflict.o \
	src/conflict_log.o \
	src/consistency.o \
	src/cosmosrep.o \
	src/ddl.o \
	src/ddl_fence.o \
	src/ddl_names.o \
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
	src/seen.o \
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
	src/tombstone.o \
	src/upgrade.o

# the install script of this version, the update scripts from older ones,
# and the install scripts of released versions as they shipped
# (sql/released/README), which those updates start from
DATA = sql/cosmosrep--$(EXTVERSION).sql \
	sql/cosmosrep--0.1--0.2.sql
DATA_built = sql/released/cosmosrep--0.1.sql

PG_CPPFLAGS = -DCR_LIBRARY_VERSION='"$(EXTVERSION)"' -I$(srcdir)/src -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

# pg_regress runs against a temporary instance configured for cosmosrep
REGRESS = $(patsubst sql/%.sql,%,$(filter-out sql/cosmosrep--%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-instance=./tmp_regress --temp-config=$(srcdir)/test/regress.conf

# multi-region and pgTAP tests (prove, PostgreSQL::Test::Cluster)
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_check test/released-0.1.tar

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild everything when one changes
$(OBJS): $(wildcard $(srcdir)/src/*.h)
# cosmosrep.library_version() is EXTVERSION, passed as CR_LIBRARY_VERSION
src/status.o: Makefile

# a released install script is kept compressed, so that git never takes it
# for the current one moved (sql/released/README)
# (the empty rule keeps Makefile.global's %.gz: % from making it from it)
sql/released/cosmosrep--0.1.sql: sql/released/cosmosrep--0.1.sql.gz
	gzip -dc $< > $@
sql/released/cosmosrep--0.1.sql.gz: ;

# Test 058 builds cosmosrep 0.1 from the commit that shipped it.  The tests
# run in a copy of the tree without .git (test/run), so the build archives
# that commit here, when this is a git checkout that has it; without it the
# test says why it skips.
RELEASED_0_1_COMMIT = a8013aa
all: test/released-0.1.tar
test/released-0.1.tar:
	@git -c safe.directory='$(abspath $(srcdir))' -C $(srcdir) archive --format=tar \
		-o $(abspath $@) $(RELEASED_0_1_COMMIT) 2>/dev/null || rm -f $@

# after PGXS, which resets PROVE_FLAGS
PROVE_FLAGS += -I $(srcdir)/test/perl
