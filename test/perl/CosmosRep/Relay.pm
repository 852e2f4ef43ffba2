# CosmosRep::Relay: a TCP relay that puts distance between regions.
#
# The kernel here has no netem, so the harness delays the links itself: a
# relay listens on a loopback port, connects each client to a region's
# Unix socket, and holds the bytes of each direction for a one-way delay,
# with optional jitter that never reorders bytes within a connection (a
# chunk is never due before the one read before it).  One forked process
# per relay, with one select loop over all its connections; it stops when
# the test ends (stop_relays, or the END block).  set_relay_delay changes
# a running relay's delay: a link that slows down or recovers.

package CosmosRep::Relay;

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time);

our @EXPORT = qw(start_relay set_relay_delay stop_relays);

my @relays;
my %control;    # port -> [ pipe to the relay, pipe of its answers ]

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
	pipe(my $ctl_in, my $ctl_out) or die "relay: cannot make a pipe: $!";
	pipe(my $ack_in, my $ack_out) or die "relay: cannot make a pipe: $!";
	my $pid = fork();
	die "relay: cannot fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		close $ctl_out;
		close $ack_in;
		relay_loop($listen, $target, $delay_ms / 1000, $jitter_ms / 1000,
			$ctl_in, $ack_out);
		POSIX::_exit(0);
	}
	close $listen;
	close $ctl_in;
	close $ack_out;
	$ctl_out->autoflush(1);
	$control{$port} = [ $ctl_out, $ack_in ];
	push @relays, $pid;
	return $port;
}

# set_relay_delay($port, $delay_ms, $jitter_ms): the relay on $port holds
# what it reads from now on that long; returns once the relay has taken
# it.  Bytes it already holds keep their time, and none overtakes them.
sub set_relay_delay
{
	my ($port, $delay_ms, $jitter_ms) = @_;
	my $ctl = $control{$port} or die "relay: no relay of this process on port $port";
	$jitter_ms //= 0;
	print { $ctl->[0] } "$delay_ms $jitter_ms\n" or die "relay: cannot reach the relay: $!";
	my $ack = readline($ctl->[1]);
	die "relay: the relay on port $port did not answer" unless defined $ack;
	return;
}

sub stop_relays
{
	local $?;    # in an END block, the test's exit status

	kill 'KILL', @relays;
	waitpid($_, 0) for @relays;
	@relays = ();
	%control = ();
	return;
}

END { stop_relays() }

# one direction of a connection: bytes read from $from, due for $to
sub new_flow
{
	my ($from, $to) = @_;
	return { from => $from, to => $to, queue => [], last_due => 0, eof => 0 };
}

# the relay's process: forward the connections of $listen to $target, and
# take new delays from $ctl (one "delay_ms jitter_ms" line each, answered
# on $ack)
sub relay_loop
{
	my ($listen, $target, $delay, $jitter, $ctl, $ack) = @_;
	my $select = IO::Select->new($listen, $ctl);
	my $ctl_buf = '';

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

				# each chunk goes out when due, as libpq and the server
				# send theirs: Nagle's algorithm would hold a small one
				# until the client acknowledges the last, which a delayed
				# ACK puts off by up to 40 ms
				setsockopt($client, IPPROTO_TCP, TCP_NODELAY, 1);
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
			if ($sock == $ctl)
			{
				my $n = sysread($ctl, $ctl_buf, 4096, length $ctl_buf);
				# the test is gone: stop_relays ends this process
				$select->remove($ctl) unless $n;
				while ($ctl_buf =~ s/^(\d+(?:\.\d+)?) (\d+(?:\.\d+)?)\n//)
				{
					($delay, $jitter) = ($1 / 1000, $2 / 1000);
					syswrite($ack, "ok\n");
				}
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
