<?php
/**
 * A beanstalkd queue worker written for rdaemon (or systemd) supervision.
 *
 * Plain PHP 8 with ext-pcntl and ext-sockets, no Composer packages: it
 * speaks beanstalkd's text protocol itself and the sd_notify protocol with
 * one datagram socket. What it shows, each in one short function below:
 *
 *  - SIGTERM / SIGINT: finish the job in hand, then exit 0. A job reserved
 *    after the signal arrived is released back to the queue untouched.
 *  - SIGHUP: the same, but exit with the recycle code (a "reload").
 *  - READY=1 once the queue connection is up; WATCHDOG=1 often enough for
 *    WATCHDOG_USEC while idle and between jobs; STATUS= with a job count;
 *    STOPPING=1 on the way out. No NOTIFY_SOCKET: all of it is a no-op.
 *  - --max-jobs N: exit after N jobs so the supervisor starts a fresh
 *    process (Laravel's queue:work --max-jobs), with exit status 0 or
 *    --recycle-code.
 *
 * Usage: php worker.php [--tube NAME] [--max-jobs N] [--recycle-code N]
 *
 * Environment (options win over it):
 *   BEANSTALK_HOST      default 127.0.0.1
 *   BEANSTALK_PORT      default 11300
 *   BEANSTALK_TUBE      default "default"
 *   MAX_JOBS            default 0 (never recycle)
 *   RECYCLE_EXIT_CODE   default 0
 *   RESULTS_FILE        where each processed job is recorded as "JOBID PID"
 *                       (the stand-in for real work; tests count the lines)
 *
 * A job's body is the work to do: a whole number is read as milliseconds
 * of simulated work, anything else as no work. Replace handle_job() with
 * your own code; keep it idempotent, because a queue delivers at least once
 * (a worker killed with SIGKILL after the work but before `delete` leaves
 * the job to be delivered again).
 */

declare(strict_types=1);

const EXIT_USAGE = 2;
const EXIT_QUEUE = 1;

final class QueueError extends RuntimeException
{
}

/** beanstalkd's text protocol over one TCP connection. */
final class Beanstalk
{
    /** @var resource */
    private $conn;

    public function __construct(string $host, int $port)
    {
        $conn = @stream_socket_client("tcp://$host:$port", $errno, $errstr, 10);
        if ($conn === false) {
            throw new QueueError("cannot connect to beanstalkd at $host:$port: $errstr");
        }
        $this->conn = $conn;
    }

    /** Watches only $tube (reserve takes jobs from it alone). */
    public function watchOnly(string $tube): void
    {
        $this->expect($this->command("watch $tube"), 'WATCHING');
        if ($tube !== 'default') {
            $this->expect($this->command('ignore default'), 'WATCHING');
        }
    }

    /**
     * Waits up to $seconds for a job.
     *
     * @return array{0: string, 1: string}|null [id, body], or null when the
     *   wait timed out (TIMED_OUT, or DEADLINE_SOON for a job we hold)
     */
    public function reserve(int $seconds): ?array
    {
        // The read may block for $seconds: allow for that plus a margin.
        stream_set_timeout($this->conn, $seconds + 30);
        $reply = $this->command("reserve-with-timeout $seconds");
        if ($reply === 'TIMED_OUT' || $reply === 'DEADLINE_SOON') {
            return null;
        }
        if (!preg_match('/^RESERVED (\d+) (\d+)$/', $reply, $m)) {
            throw new QueueError("unexpected reply to reserve: $reply");
        }
        return [$m[1], $this->readBody((int) $m[2])];
    }

    public function delete(string $id): void
    {
        $this->expect($this->command("delete $id"), 'DELETED');
    }

    /** Puts a reserved job back in the ready queue, at the front. */
    public function release(string $id): void
    {
        $this->expect($this->command("release $id 0 0"), 'RELEASED');
    }

    private function command(string $line): string
    {
        $this->write("$line\r\n");
        $reply = fgets($this->conn);
        if ($reply === false) {
            $why = stream_get_meta_data($this->conn)['timed_out'] ? 'timed out' : 'connection closed';
            throw new QueueError("beanstalkd: no reply to '$line' ($why)");
        }
        return rtrim($reply, "\r\n");
    }

    private function readBody(int $bytes): string
    {
        $body = '';
        while (strlen($body) < $bytes + 2) {
            $chunk = fread($this->conn, $bytes + 2 - strlen($body));
            if ($chunk === false || $chunk === '') {
                throw new QueueError('beanstalkd: connection closed inside a job body');
            }
            $body .= $chunk;
        }
        return substr($body, 0, $bytes);
    }

    private function write(string $data): void
    {
        while ($data !== '') {
            $n = fwrite($this->conn, $data);
            if ($n === false || $n === 0) {
                throw new QueueError('beanstalkd: cannot send (connection closed)');
            }
            $data = substr($data, $n);
        }
    }

    private function expect(string $reply, string $word): void
    {
        if (strtok($reply, ' ') !== $word) {
            throw new QueueError("beanstalkd: expected $word, got '$reply'");
        }
    }
}

/**
 * sd_notify: one datagram per message to $NOTIFY_SOCKET (a path, or an
 * abstract socket name written with a leading "@"). Without the variable
 * every call is a no-op.
 */
final class Notifier
{
    private ?Socket $socket = null;

    public function __construct()
    {
        $addr = getenv('NOTIFY_SOCKET');
        if ($addr === false || $addr === '') {
            return;
        }
        if ($addr[0] === '@') {
            $addr = "\0" . substr($addr, 1);
        } elseif ($addr[0] !== '/') {
            fwrite(STDERR, "worker: NOTIFY_SOCKET=$addr is neither a path nor @abstract; not notifying\n");
            return;
        }
        $socket = socket_create(AF_UNIX, SOCK_DGRAM, 0);
        // socket_connect() passes the address with its length, so the
        // leading NUL of an abstract name survives (socket_sendto() would
        // cut it at the NUL).
        if ($socket === false || !@socket_connect($socket, $addr)) {
            fwrite(STDERR, "worker: cannot reach NOTIFY_SOCKET: " . socket_strerror(socket_last_error()) . "\n");
            return;
        }
        $this->socket = $socket;
    }

    public function send(string $message): void
    {
        if ($this->socket !== null && @socket_send($this->socket, $message, strlen($message), 0) === false) {
            fwrite(STDERR, 'worker: sd_notify failed: ' . socket_strerror(socket_last_error($this->socket)) . "\n");
        }
    }
}

/**
 * Keeps the supervisor's watchdog fed and STATUS= current.
 *
 * beat() runs after every job and every empty wait; the worker wakes at
 * least every $wake seconds (the reserve timeout, or the pause between
 * polls). It pings when waiting for the next wake-up could overshoot
 * half of WATCHDOG_USEC, so pings are never further apart than that
 * while idle. A job must finish well within WATCHDOG_USEC (or ping from
 * inside it). A new STATUS= goes out at most once a second, so a busy
 * worker does not flood the supervisor.
 */
final class Heartbeat
{
    /** Seconds between watchdog pings; INF without a watchdog. */
    private float $every = INF;
    private float $last;
    private string $lastStatus = '';

    public function __construct(private Notifier $notifier, private float $wake)
    {
        $usec = (int) getenv('WATCHDOG_USEC');
        $pid = getenv('WATCHDOG_PID');
        if ($usec > 0 && ($pid === false || $pid === '' || (int) $pid === getmypid())) {
            $this->every = $usec / 2e6;
        }
        $this->last = hrtime(true) / 1e9;
    }

    public function beat(string $status): void
    {
        $now = hrtime(true) / 1e9;
        $watchdogDue = $now + $this->wake >= $this->last + $this->every;
        $statusDue = $status !== $this->lastStatus && $now >= $this->last + 1.0;
        if (!$watchdogDue && !$statusDue) {
            return;
        }
        $this->notifier->send(($this->every < INF ? "WATCHDOG=1\n" : '') . "STATUS=$status");
        $this->last = $now;
        $this->lastStatus = $status;
    }
}

/** The work: record the job, after simulating $body milliseconds of effort. */
function handle_job(string $id, string $body, string $resultsFile): void
{
    if (ctype_digit($body)) {
        // usleep() returns early when a signal arrives: sleep out the rest.
        $until = hrtime(true) + (int) $body * 1_000_000;
        while (($left = $until - hrtime(true)) > 0) {
            usleep(intdiv($left, 1000));
        }
    }
    if ($resultsFile !== '') {
        // One O_APPEND write per job: lines from concurrent workers never mix.
        if (file_put_contents($resultsFile, "$id " . getmypid() . "\n", FILE_APPEND) === false) {
            throw new RuntimeException("cannot append to $resultsFile");
        }
    }
}

function option(array $opts, string $name, string $env, string $default): string
{
    $v = $opts[$name] ?? getenv($env);
    return ($v === false || $v === '' || is_array($v)) ? $default : (string) $v;
}

function whole(string $value, string $what): int
{
    if (!ctype_digit($value)) {
        fwrite(STDERR, "worker: $what must be a whole number, not '$value'\n");
        exit(EXIT_USAGE);
    }
    return (int) $value;
}

function main(): int
{
    foreach (['pcntl', 'sockets'] as $ext) {
        if (!extension_loaded($ext)) {
            fwrite(STDERR, "worker: PHP extension $ext is missing\n");
            return EXIT_USAGE;
        }
    }
    $known = ['tube', 'max-jobs', 'recycle-code'];
    // getopt() skips what it does not know: refuse it instead.
    $argv = $_SERVER['argv'];
    for ($i = 1; $i < count($argv); $i++) {
        $name = explode('=', substr($argv[$i], 2), 2)[0];
        if (!str_starts_with($argv[$i], '--') || !in_array($name, $known, true)) {
            fwrite(STDERR, "worker: unknown argument '{$argv[$i]}'\n");
            return EXIT_USAGE;
        }
        if (!str_contains($argv[$i], '=')) {
            $i++; // its value
        }
    }
    $opts = getopt('', array_map(fn ($o) => "$o:", $known));
    $host = getenv('BEANSTALK_HOST') ?: '127.0.0.1';
    $port = whole(getenv('BEANSTALK_PORT') ?: '11300', 'BEANSTALK_PORT');
    $tube = option($opts, 'tube', 'BEANSTALK_TUBE', 'default');
    $maxJobs = whole(option($opts, 'max-jobs', 'MAX_JOBS', '0'), '--max-jobs');
    $recycleCode = whole(option($opts, 'recycle-code', 'RECYCLE_EXIT_CODE', '0'), '--recycle-code');
    $resultsFile = getenv('RESULTS_FILE') ?: '';
    $me = 'worker ' . getmypid() . (getenv('RDAEMON_SLOT') ? ' (slot ' . getenv('RDAEMON_SLOT') . ')' : '');

    // Signals only set a flag; the loop below acts on it between jobs.
    $stop = null; // null: keep going; otherwise the exit status to leave with
    pcntl_async_signals(true);
    pcntl_signal(SIGTERM, function () use (&$stop) { $stop ??= 0; });
    pcntl_signal(SIGINT, function () use (&$stop) { $stop ??= 0; });
    pcntl_signal(SIGHUP, function () use (&$stop, $recycleCode) { $stop ??= $recycleCode; });

    $notifier = new Notifier();
    try {
        $queue = new Beanstalk($host, $port);
        $queue->watchOnly($tube);
    } catch (QueueError $e) {
        fwrite(STDERR, "$me: {$e->getMessage()}\n");
        return EXIT_QUEUE;
    }

    // beanstalkd's timeouts are whole seconds: wake once a second, or poll
    // when the watchdog wants pings more often than that.
    $usec = (int) getenv('WATCHDOG_USEC');
    $wait = ($usec > 0 && $usec < 2_000_000) ? 0 : 1;
    $pause = $wait === 0 ? intdiv($usec, 4) : 0; // microseconds between polls
    $heartbeat = new Heartbeat($notifier, $wait + $pause / 1e6);
    $notifier->send("READY=1\nSTATUS=waiting for jobs on $tube");
    fwrite(STDERR, "$me: ready on $host:$port tube $tube\n");

    $done = 0;
    try {
        while ($stop === null && ($maxJobs === 0 || $done < $maxJobs)) {
            $job = $queue->reserve($wait);
            if ($job === null) {
                $heartbeat->beat("processed $done jobs");
                usleep($pause);
                continue;
            }
            [$id, $body] = $job;
            if ($stop !== null) {
                $queue->release($id); // stop asked while we waited: hand it back
                break;
            }
            handle_job($id, $body, $resultsFile);
            $queue->delete($id);
            $done++;
            $heartbeat->beat("processed $done jobs");
        }
    } catch (QueueError $e) {
        // Jobs this connection still holds go back to the queue when it
        // closes: nothing is lost.
        fwrite(STDERR, "$me: {$e->getMessage()}\n");
        return EXIT_QUEUE;
    }

    $code = $stop ?? $recycleCode;
    $why = $stop === null ? "recycling after $done jobs" : "stopping after $done jobs";
    $notifier->send("STOPPING=1\nSTATUS=$why");
    fwrite(STDERR, "$me: $why, exit $code\n");
    return $code;
}

exit(main());
