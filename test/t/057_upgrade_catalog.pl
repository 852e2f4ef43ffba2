# The extension's catalog is the same whether 0.2 was installed or 0.1
# (the released install script, sql/released/) was installed and updated
# with ALTER EXTENSION cosmosrep UPDATE: every catalog change of a version
# must be made in its install script and in its update script, and this
# test fails when one of them lacks it.  Compared: the extension's member
# objects with their definitions, comments and privileges, the columns,
# indexes, constraints and triggers of schema cosmosrep, and the tables
# pg_dump dumps.
use strict;
use warnings;

use CosmosRep::Test;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_region('upcat', link_role => 0);
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE updated');
$node->safe_psql('postgres', 'CREATE DATABASE skewed');

$node->safe_psql('fresh', 'CREATE EXTENSION cosmosrep');
is($node->safe_psql('fresh',
		"SELECT extversion FROM pg_extension WHERE extname = 'cosmosrep'"),
	'0.2', 'CREATE EXTENSION installs version 0.2 by default');

for my $db ('updated', 'skewed')
{
	$node->safe_psql($db, "CREATE EXTENSION cosmosrep VERSION '0.1'");
}
is($node->safe_psql('updated',
		"SELECT extversion FROM pg_extension WHERE extname = 'cosmosrep'"),
	'0.1', 'the released 0.1 install script is installed with the extension');
for my $db ('updated', 'skewed')
{
	$node->safe_psql($db, 'ALTER EXTENSION cosmosrep UPDATE');
}
is($node->safe_psql('updated',
		"SELECT extversion FROM pg_extension WHERE extname = 'cosmosrep'"),
	'0.2', 'ALTER EXTENSION cosmosrep UPDATE takes 0.1 to 0.2');

# one line per object or column, with what defines it
my $catalog = <<'SQL';
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'cosmosrep'),
members AS (
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
       AND d.deptype = 'e')
SELECT line FROM (
    SELECT 'member ' || pg_describe_object(m.classid, m.objid, m.objsubid)
           || coalesce(' comment ' || obj_description(m.objid, m.classid::regclass::name), '')
           || coalesce(' def ' || CASE m.classid
                  WHEN 'pg_proc'::regclass THEN
                      (SELECT pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '-')
                         FROM pg_proc p WHERE p.oid = m.objid AND p.prokind <> 'a')
                  WHEN 'pg_class'::regclass THEN
                      (SELECT c.relkind::text || ' acl ' || coalesce(c.relacl::text, '-')
                              || coalesce(' view ' || pg_get_viewdef(c.oid), '')
                              || ' options ' || coalesce(c.reloptions::text, '-')
                         FROM pg_class c WHERE c.oid = m.objid)
                  WHEN 'pg_type'::regclass THEN
                      (SELECT format_type(t.oid, NULL) || ' ' || t.typtype::text FROM pg_type t
                        WHERE t.oid = m.objid)
                  WHEN 'pg_namespace'::regclass THEN
                      (SELECT coalesce(n.nspacl::text, '-') FROM pg_namespace n WHERE n.oid = m.objid)
                  END, '') AS line
      FROM members m
    UNION ALL
    SELECT format('column %s.%s %s %s null=%s default=%s comment=%s acl=%s',
                  c.table_name, c.column_name, c.ordinal_position, c.data_type,
                  c.is_nullable, coalesce(c.column_default, '-'),
                  coalesce(col_description(format('cosmosrep.%I', c.table_name)::regclass,
                                           c.ordinal_position::int), '-'),
                  coalesce((SELECT a.attacl::text FROM pg_attribute a
                             WHERE a.attrelid = format('cosmosrep.%I', c.table_name)::regclass
                               AND a.attname = c.column_name), '-'))
      FROM information_schema.columns c
     WHERE c.table_schema = 'cosmosrep'
    UNION ALL
    SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'cosmosrep'
    UNION ALL
    SELECT format('constraint %s on %s: %s', con.conname, con.conrelid::regclass,
                  pg_get_constraintdef(con.oid))
      FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
     WHERE n.nspname = 'cosmosrep'
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'cosmosrep' AND NOT t.tgisinternal
    UNION ALL
    SELECT 'dumped ' || cfg::regclass || ' where ' || coalesce(cond, '-')
      FROM pg_extension e,
           unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
     WHERE e.extname = 'cosmosrep'
) lines
ORDER BY line COLLATE "C";
SQL

my $fresh = $node->safe_psql('fresh', $catalog);
my $updated = $node->safe_psql('updated', $catalog);
cmp_ok(scalar(split /\n/, $fresh), '>', 100,
	'the comparison sees the catalog (more than a hundred lines)');
is($updated, $fresh,
	'0.1 updated to 0.2 has the same catalog as 0.2 installed');

# the comparison notices a change made in one script only
$node->safe_psql('skewed', q{
	COMMENT ON FUNCTION cosmosrep.library_version() IS 'only here';
	ALTER TABLE cosmosrep.region ADD COLUMN only_here integer});
my $skewed = $node->safe_psql('skewed', $catalog);
my @only = grep { /only_here|only here/ } split /\n/, $skewed;
is(scalar(@only), 2,
	'a comment and a column added in one database only are lines of the comparison');
isnt($skewed, $fresh, 'a catalog changed in one place only compares different');

# the library runs under either catalog: 0.1's replication_status works
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', "CREATE EXTENSION cosmosrep VERSION '0.1'");
is($node->safe_psql('old', 'SELECT count(*) FROM cosmosrep.replication_status'),
	'0', 'the 0.2 library serves the 0.1 catalog (replication_status)');

# the released script is the one the commit that shipped 0.1 holds, when
# this runs in a git checkout that has the commit
my $srcdir = $ENV{srcdir} // '.';
my $shipped = `git -C '$srcdir' show a8013aa:sql/cosmosrep--0.1.sql 2>/dev/null`;
SKIP:
{
	skip 'no git history here (a copy without .git): the released 0.1 script is not compared with commit a8013aa', 1
	  if $? != 0 || $shipped eq '';
	my $released = `gzip -dc '$srcdir/sql/released/cosmosrep--0.1.sql.gz'`;
	ok($released eq $shipped,
		'sql/released/cosmosrep--0.1.sql.gz is the 0.1 install script of commit a8013aa');
}

done_testing();
