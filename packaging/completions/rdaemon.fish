# Added by tests/generated_files.rs: the daemon names in the PID directory
# after --check, --status, --stop, --restart and --name; commands after --.
function __rdaemon_names
    set -l tokens (commandline -opc)
    set -l dir
    set -l i (contains -i -- --pid-dir $tokens)
    and set dir --pid-dir $tokens[(math $i + 1)]
    for t in $tokens
        string match -q -- '--pid-dir=*' $t
        and set dir --pid-dir (string replace -- '--pid-dir=' '' $t)
    end
    $tokens[1] --list-names $dir 2>/dev/null
end
function __rdaemon_command_position
    set -l tokens (commandline -opc)
    test "$tokens[-1]" = --
end
complete -c rdaemon -n __rdaemon_command_position -x -a '(__fish_complete_command)'
complete -c rdaemon -l name -d 'Start COMMAND as a peer of NAME' -r -f -a '(__rdaemon_names)'
complete -c rdaemon -l check -d 'Exit 0 if at least K peers of NAME run (LSB status codes; for cron watchdogs)' -r -f -a '(__rdaemon_names)'
complete -c rdaemon -l status -d 'Show NAME\'s slots (every name\'s, without NAME): state, PID, child PID, COMMAND\'s uptime, heartbeat age, restarts, last exit, STATUS= text' -r -f -a '(__rdaemon_names)'
complete -c rdaemon -l stop -d 'Stop every peer of NAME, or slot I\'s (SIGTERM, then SIGKILL after --timeout)' -r -f -a '(__rdaemon_names)'
complete -c rdaemon -l restart -d 'Rolling restart: restart COMMAND in each slot of NAME in turn (or in slot I), going on only once the new COMMAND runs (is READY under --notify)' -r -f -a '(__rdaemon_names)'
complete -c rdaemon -l pid-dir -d 'Directory of the slot files [default: $RDAEMON_PID_DIR, /run/rdaemon for root, /tmp/rdaemon-$UID for others]' -r -F
complete -c rdaemon -l max-peers -d 'How many copies of NAME may run at once' -r
complete -c rdaemon -l stop-timeout -d 'Grace between SIGTERM and SIGKILL when stopping COMMAND [default: 10; 4 with --cluster-max-peers, which allows at most --lease-ttl/2 minus a margin]' -r
complete -c rdaemon -l max-respawns -d 'Give up after N failed runs within --respawn-window (recycles never count)' -r
complete -c rdaemon -l respawn-window -d 'The window for --max-respawns' -r
complete -c rdaemon -l respawn-delay -d 'First pause before a restart after a failed run; doubles up to 60s, back to the first after any run of at least --min-uptime' -r
complete -c rdaemon -l exit-codes -d 'Exit statuses that mean COMMAND finished its work: not restarted (supervisord\'s exitcodes= with autorestart=unexpected), e.g. 0 or 0,3' -r
complete -c rdaemon -l min-uptime -d 'A run of COMMAND shorter than SECS is a failed run (back-off, counted toward --max-respawns); an exit after a longer run is a planned recycle: restarted at once, never counted' -r
complete -c rdaemon -l recycle-codes -d 'Exit statuses that are always planned recycles, restarted at once (e.g. 12, Laravel\'s memory-limit exit)' -r
complete -c rdaemon -l pidfile -d 'With --forking: the PID file COMMAND writes, naming its main process (trusted only for a descendant of the supervisor)' -r -F
complete -c rdaemon -l memory-limit -d 'Stop COMMAND gracefully when its process tree\'s resident memory exceeds SIZE (512K, 64M, 2G); with --respawn, start it afresh' -r
complete -c rdaemon -l log -d 'Append COMMAND\'s stdout and stderr, and rdaemon\'s events, to FILE (created 0640; reopened when rotated away)' -r -F
complete -c rdaemon -l syslog-socket -d 'The syslog socket' -r -F
complete -c rdaemon -l chdir -d 'Run COMMAND in DIR [default: / when detached, the current directory with --foreground]' -r -F
complete -c rdaemon -l umask -d 'File mode creation mask for COMMAND, in octal (e.g. 027)' -r
complete -c rdaemon -l user -d 'Run COMMAND as USER (and GROUP), names or numeric IDs, with USER\'s supplementary groups; root only. The PID file stays root\'s. The packaged static build looks names up in /etc/passwd and /etc/group (and nscd), not through NSS modules such as sssd or LDAP' -r
complete -c rdaemon -l env -d 'Set an environment variable for COMMAND (repeatable)' -r
complete -c rdaemon -l ready-timeout -d 'With --notify: stop COMMAND and fail the start when READY=1 has not arrived within SECS (EXTEND_TIMEOUT_USEC= extends it); with --forking, when COMMAND has not daemonized (first process exited, main process found, --pidfile written) within SECS' -r
complete -c rdaemon -l watchdog -d 'COMMAND must send WATCHDOG=1 at least every SECS (WATCHDOG_USEC tells it); otherwise it is hung: stopped gracefully and, with --respawn, started afresh' -r
complete -c rdaemon -l heartbeat-interval -d 'Also refresh the heartbeat (the PID file\'s mtime) every SECS. Not needed for --check --max-age or --status: by default the supervisor answers each of them with a fresh heartbeat and otherwise sleeps without waking. Set it for monitors that only stat() the file. A COMMAND that sends WATCHDOG=1 supplies its own heartbeat' -r
complete -c rdaemon -l min-peers -d 'How many peers must run: with --check, for exit 0 [default: 1]; on a start, start only the missing ones (at most --max-peers)' -r
complete -c rdaemon -l max-age -d 'With --check: each running peer\'s heartbeat must be younger than SECS' -r
complete -c rdaemon -l format -d 'With --status: the output format' -r -f -a "text\t'A table, one line per slot'
json\t'A JSON array, one object per slot'
prometheus\t'The Prometheus text exposition format (node_exporter\'s textfile collector)'"
complete -c rdaemon -l slot -d 'With --stop or --restart: only slot I' -r
complete -c rdaemon -l timeout -d 'With --stop: how long to wait after SIGTERM before SIGKILL [default: each peer\'s own --stop-timeout plus 5s]; with --restart: how long to wait for each slot\'s new COMMAND to run [default: its --stop-timeout plus 65s]' -r
complete -c rdaemon -l etcd -d 'etcd v3 endpoints (comma-separated), tried in order. With --name and --cluster-max-peers: also hold one of M fleet-wide slots; with --check and --status: answer for the whole fleet. --stop stays local' -r
complete -c rdaemon -l cluster-max-peers -d 'With --etcd: at most M peers of NAME across every host sharing that etcd' -r
complete -c rdaemon -l lease-ttl -d 'The etcd lease\'s time to live, whole seconds: a host cut off from etcd stops COMMAND (SIGTERM by SECS/2, SIGKILL before SECS) so that no other host can take the slot while it still runs' -r
complete -c rdaemon -l list-names -d 'Print the names that have slot files in the PID directory, one per line (for shell completion)'
complete -c rdaemon -s f -l foreground -d 'Do not detach: stay in the foreground (systemd Type=simple, containers)'
complete -c rdaemon -l respawn -d 'Restart COMMAND when it exits on its own'
complete -c rdaemon -l forking -d 'COMMAND daemonizes itself (forks and lets its first process exit): supervise the process it leaves behind'
complete -c rdaemon -l syslog -d 'Send COMMAND\'s output and rdaemon\'s events to syslog, tagged NAME (stdout at info, stderr at err, events at notice; facility daemon)'
complete -c rdaemon -l timestamps -d 'Prefix every line in --log with an RFC 3339 UTC timestamp (milliseconds) and the slot: `2026-11-29T12:00:00.123Z NAME.2: text` (not with --syslog, which stamps its own)'
complete -c rdaemon -l notify -d 'Report the start only once COMMAND has sent READY=1 over $NOTIFY_SOCKET (the sd_notify protocol; every COMMAND gets a private NOTIFY_SOCKET)'
complete -c rdaemon -s q -l quiet -d 'Say nothing when every slot is busy (cron-friendly)'
complete -c rdaemon -s v -l verbose -d 'With --check: name every slot that is not running and why; with --stop and --restart: say what was done to each slot'
complete -c rdaemon -l json -d 'With --status: print a JSON array, one object per slot (--format json)'
complete -c rdaemon -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rdaemon -s V -l version -d 'Print version'
