# The shape of the source tree: no circle of includes between files, no
# C file over 1,200 lines, no function over 150, and a map in
# docs/design.md that names every file, what it calls and its layer.  A file depends on another when it
# (or a header it includes) includes the other's header and the other has
# a .c file of that name; headers without a .c file (names.h, wait.h)
# belong to no layer.
use strict;
use warnings;

use Test::More;

my $src = 'src';
opendir(my $dir, $src) or die "cannot read $src: $!";
my @files = sort grep { /\.[ch]$/ } readdir $dir;
closedir $dir;
my %module = map { s/\.c$//r => 1 } grep { /\.c$/ } @files;

sub local_includes
{
	my ($file) = @_;
	open(my $fh, '<', "$src/$file") or die "cannot read $src/$file: $!";
	my @inc = map { /^#include "([a-z_]+)\.h"/ ? ($1) : () } <$fh>;
	close $fh;
	return grep { -e "$src/$_.h" } @inc;
}

# module -> the modules it depends on
my %deps;
for my $m (sort keys %module)
{
	my %seen;
	my @todo = local_includes("$m.c");
	while (my $h = shift @todo)
	{
		next if $seen{$h}++;
		push @todo, local_includes("$h.h");
	}
	$deps{$m} = [ grep { $_ ne $m && $module{$_} } sort keys %seen ];
}

# a circle, as a list of modules, or none
sub find_circle
{
	my %state;
	my @path;
	my $visit;
	$visit = sub {
		my ($m) = @_;
		$state{$m} = 1;
		push @path, $m;
		for my $d (@{ $deps{$m} })
		{
			if (($state{$d} // 0) == 1)
			{
				my @from = @path;
				shift @from while $from[0] ne $d;
				return [ @from, $d ];
			}
			next if $state{$d};
			my $c = $visit->($d);
			return $c if $c;
		}
		pop @path;
		$state{$m} = 2;
		return;
	};
	for my $m (sort keys %module)
	{
		next if $state{$m};
		my $c = $visit->($m);
		return $c if $c;
	}
	return;
}

my $circle = find_circle();
ok(!$circle, 'no circle of includes between source files')
  or diag('circle: ' . join(' -> ', @$circle));

for my $file (grep { /\.c$/ } @files)
{
	open(my $fh, '<', "$src/$file") or die;
	my @lines = <$fh>;
	close $fh;
	cmp_ok(scalar @lines, '<=', 1200, "$file has at most 1,200 lines");

	# a function: its name at the start of a line, its body from "{" to "}"
	# alone on their lines
	my ($name, $start);
	for my $i (0 .. $#lines)
	{
		$name = $1 if $lines[$i] =~ /^([a-z_][a-z0-9_]*)\(/;
		$start = $i if $lines[$i] =~ /^\{\s*$/;
		if ($lines[$i] =~ /^\}/ && defined $start && defined $name)
		{
			my $length = $i - $start + 1;
			ok($length <= 150, "$file: $name has at most 150 lines")
			  or diag("$name has $length lines");
			undef $start;
			undef $name;
		}
	}
}

# the map: one row per C file in docs/design.md, "| layer | `src/x.c` |
# what it owns | the files it calls |", and what it says it calls is what
# it includes; every file is one layer above the highest it calls
open(my $design, '<', 'docs/design.md') or die "cannot read docs/design.md: $!";
my (%mapped, %layer);
for (<$design>)
{
	next unless /^\| (\d+) \| `src\/([a-z_]+)\.c` \| .* \| ([^|]*) \|\s*$/;
	my ($l, $m, $calls) = ($1, $2, $3);
	$layer{$m} = $l;
	$mapped{$m} = [ sort map { /`([a-z_]+)\.c`/ ? ($1) : () } split /,\s*/, $calls ];
}
close $design;
for my $m (sort keys %module)
{
	ok($mapped{$m}, "docs/design.md maps src/$m.c") or next;
	is(join(' ', @{ $mapped{$m} }), join(' ', @{ $deps{$m} }),
		"docs/design.md says which files src/$m.c calls");
	my $top = -1;
	for (@{ $deps{$m} }) { $top = $layer{$_} if defined $layer{$_} && $layer{$_} > $top }
	is($layer{$m}, $top + 1, "docs/design.md puts src/$m.c one layer above what it calls");
}
for my $m (sort keys %mapped)
{
	ok($module{$m}, "docs/design.md maps src/$m.c, which exists");
}

done_testing();
