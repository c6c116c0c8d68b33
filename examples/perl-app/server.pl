#!/usr/bin/perl
# perl-app: node mode's second example app (compose/node.yaml). A forking HTTP/1.0 server in
# perl-base alone (no CPAN, so it runs on debian:bookworm-slim as it is). Each connection is
# served by a forked child, so unlike node-app (one process) it shows forks and exits all the
# time. Routes (GET or POST):
#   /        answers "ok"
#   /file    reads /etc/os-release and opens a file that does not exist (openat ENOENT)
#   /spawn   runs /bin/true (an exec of `true`)
use strict;
use warnings;
use IO::Socket::INET;

my $port = $ENV{PORT} || 8081;
$| = 1;
$SIG{TERM} = sub { exit 0 };    # PID 1: docker stop ends it at once
$SIG{CHLD} = 'IGNORE';          # the kernel reaps the request children
my $srv = IO::Socket::INET->new(
    LocalAddr => "0.0.0.0:$port",
    Listen    => 64,
    ReuseAddr => 1
) or die "listen on $port: $!";
print "perl-app listening on $port\n";

sub reply {
    my ($c, $status, $body) = @_;
    syswrite $c,
        "HTTP/1.0 $status\r\nContent-Type: text/plain\r\nContent-Length: "
      . length($body)
      . "\r\nConnection: close\r\n\r\n$body";
}

while (1) {
    my $c = $srv->accept or next;
    my $pid = fork;
    if (!defined $pid || $pid) {
        close $c;
        next;
    }
    # The child: one request, then exit.
    close $srv;
    $SIG{CHLD} = 'DEFAULT';
    sysread $c, my $req, 8192;
    my ($path) = ($req // '') =~ m{^[A-Z]+ (/[^ ?]*)};
    $path //= '';
    if ($path eq '/') {
        reply($c, '200 OK', "ok\n");
    } elsif ($path eq '/file') {
        my $n = 0;
        if (open my $f, '<', '/etc/os-release') { $n += length while <$f>; close $f }
        if (open my $missing, '<', '/tmp/perl-app-missing') { close $missing }
        reply($c, '200 OK', "read $n bytes\n");
    } elsif ($path eq '/spawn') {
        my $rc = system('/bin/true');
        reply($c, '200 OK', "true exited $rc\n");
    } else {
        reply($c, '404 Not Found', "no route $path\n");
    }
    close $c;
    exit 0;
}
