# CosmosRep::Relay: a TCP relay that puts distance between regions.
#
# The kernel here has no netem, so the harness delays the links itself: a
# relay listens on a loopback port, connects each client to a region's
# Unix socket, and holds the bytes of each direction for a one-way delay,
# with optional jitter that never reorders bytes within a connection (a
# chunk is never due before the one read before it).  One forked process
# per relay, with one select loop over all its connections; it stops when
# the test ends (stop_relays, or the END block).

package CosmosRep::Relay;

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes qw(time);

our @EXPORT = qw(start_relay stop_relays);

my @relays;

# start_relay($unix_socket_path, $delay_ms, $jitter_ms): the loopback port
# of a new relay to the socket
sub start_relay
{
	my ($target, $delay_ms, $jitter_ms) = @_;
	$jitter_ms //= 0;
	my $listen = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Listen => 64,
		ReuseAddr => 1) or die "relay: cannot listen: $!";
	my $port = $listen->sockport;
	my $pid = fork();
	die "relay: cannot fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		relay_loop($listen, $target, $delay_ms / 1000, $jitter_ms / 1000);
		POSIX::_exit(0);
	}
	close $listen;
	push @relays, $pid;
	return $port;
}

sub stop_relays
{
	local $?;    # in an END block, the test's exit status

	kill 'KILL', @relays;
	waitpid($_, 0) for @relays;
	@relays = ();
	return;
}

END { stop_relays() }

# one direction of a connection: bytes read from $from, due for $to
sub new_flow
{
	my ($from, $to) = @_;
	return { from => $from, to => $to, queue => [], last_due => 0, eof => 0 };
}

sub relay_loop
{
	my ($listen, $target, $delay, $jitter) = @_;
	my $select = IO::Select->new($listen);

	# a peer that went away is an end of its connection, not of the relay
	local $SIG{PIPE} = 'IGNORE';
	my %flow_of;    # socket -> the flow it reads into
	my @pairs;      # [ client to server, server to client ]
	my @flows;

	for (;;)
	{
		my $now = time;
		my $wait = 1;
		for my $f (@flows)
		{
			next unless @{ $f->{queue} };
			my $in = $f->{queue}[0][0] - $now;
			$wait = $in if $in < $wait;
		}
		$wait = 0 if $wait < 0;
		for my $sock ($select->can_read($wait))
		{
			if ($sock == $listen)
			{
				my $client = $listen->accept or next;
				my $server = IO::Socket::UNIX->new(Peer => $target, Type => SOCK_STREAM);
				unless ($server)
				{
					close $client;
					next;
				}
				my $up = new_flow($client, $server);
				my $down = new_flow($server, $client);
				$flow_of{$client} = $up;
				$flow_of{$server} = $down;
				push @pairs, [ $up, $down ];
				push @flows, $up, $down;
				$select->add($client, $server);
				next;
			}
			my $f = $flow_of{$sock} or next;
			my $n = sysread($sock, my $buf, 65536);
			if (!$n)
			{
				$f->{eof} = 1;
				$select->remove($sock);
				next;
			}
			my $due = time + $delay + ($jitter > 0 ? rand($jitter) : 0);
			$due = $f->{last_due} if $due < $f->{last_due};
			$f->{last_due} = $due;
			push @{ $f->{queue} }, [ $due, $buf ];
		}

		# send what is due; a flow that reached its end passes it on
		$now = time;
		for my $f (@flows)
		{
			while (@{ $f->{queue} } && $f->{queue}[0][0] <= $now)
			{
				my $chunk = shift @{ $f->{queue} };
				my $off = 0;
				while ($off < length $chunk->[1])
				{
					my $w = syswrite($f->{to}, $chunk->[1], length($chunk->[1]) - $off, $off);
					unless (defined $w)
					{
						# the receiver is gone: drop what is left of this flow
						@{ $f->{queue} } = ();
						$f->{eof} = 1;
						last;
					}
					$off += $w;
				}
			}
			if ($f->{eof} && !@{ $f->{queue} } && !$f->{closed})
			{
				shutdown($f->{to}, 1);
				$f->{closed} = 1;
			}
		}
		# forget connections whose two directions are done
		for my $pair (grep { $_->[0]{closed} && $_->[1]{closed} } @pairs)
		{
			for my $f (@$pair)
			{
				$select->remove($f->{from});
				delete $flow_of{ $f->{from} };
				close $f->{from};
			}
		}
		@pairs = grep { !($_->[0]{closed} && $_->[1]{closed}) } @pairs;
		@flows = map { @$_ } @pairs;
	}
}

1;
