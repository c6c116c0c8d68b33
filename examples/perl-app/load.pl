#!/usr/bin/perl
# Example load for compose/node.yaml: requests every URL given, one connection each (HTTP/1.0),
# then sleeps INTERVAL seconds, forever, so every dashboard panel has data without anyone
# sending load.
#   perl load.pl INTERVAL URL...      e.g. perl load.pl 1 http://node-app:8080/fast http://perl-app:8081/
# Prints the first failure of each URL (an app still starting) and a count every 100 rounds.
use strict;
use warnings;
use IO::Socket::INET;

$| = 1;
$SIG{TERM} = sub { exit 0 };
my ($interval, @urls) = @ARGV;
die "usage: load.pl INTERVAL URL...\n" unless defined $interval && @urls;
my %failed;

sub get {
    my ($url) = @_;
    my ($host, $port, $path) = $url =~ m{^http://([^/:]+):(\d+)(/.*)?$}
      or die "not an http://HOST:PORT/PATH url: $url\n";
    $path //= '/';
    my $s = IO::Socket::INET->new(PeerAddr => "$host:$port", Timeout => 5) or return "connect: $!";
    syswrite $s, "GET $path HTTP/1.0\r\nHost: $host\r\n\r\n";
    my $resp = '';
    1 while sysread($s, $resp, 4096, length $resp);
    close $s;
    return $resp =~ m{^HTTP/1\.[01] 200 } ? undef : "answer: " . substr($resp, 0, 40);
}

for (my $round = 1; ; $round++) {
    for my $url (@urls) {
        my $err = get($url);
        if ($err) {
            print "load: $url: $err\n" unless $failed{$url}++;
        } else {
            delete $failed{$url};
        }
    }
    print "load: $round rounds\n" if $round % 100 == 0;
    select(undef, undef, undef, $interval);
}
