_rdaemon_options() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="rdaemon"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        rdaemon)
            opts="-f -q -v -h -V --name --check --status --stop --restart --list-names --pid-dir --max-peers --foreground --stop-timeout --respawn --max-respawns --respawn-window --respawn-delay --exit-codes --min-uptime --recycle-codes --forking --pidfile --memory-limit --log --syslog --timestamps --syslog-socket --chdir --umask --user --env --notify --ready-timeout --watchdog --quiet --heartbeat-interval --min-peers --max-age --verbose --format --json --slot --timeout --etcd --cluster-max-peers --lease-ttl --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --name)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --check)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --status)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stop)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --restart)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pid-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-peers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --stop-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-respawns)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --respawn-window)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --respawn-delay)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --exit-codes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --min-uptime)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --recycle-codes)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pidfile)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --memory-limit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --syslog-socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --chdir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --umask)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --user)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --env)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ready-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --watchdog)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --heartbeat-interval)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --min-peers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-age)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --format)
                    COMPREPLY=($(compgen -W "text json prometheus" -- "${cur}"))
                    return 0
                    ;;
                --slot)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --etcd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cluster-max-peers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --lease-ttl)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

# Added by tests/generated_files.rs (clap_complete knows neither): the
# daemon names in the PID directory (rdaemon --list-names) after --check,
# --status, --stop, --restart and --name; commands, then files, after --.
_rdaemon_names() {
    local i dir=()
    for (( i = 1; i < COMP_CWORD; i++ )); do
        # --pid-dir DIR, or --pid-dir=DIR: one word, or three when bash
        # breaks words at '=' (COMP_WORDBREAKS).
        case "${COMP_WORDS[i]}" in
            --pid-dir)
                if [[ "${COMP_WORDS[i+1]}" == = ]]; then
                    dir=(--pid-dir "${COMP_WORDS[i+2]}")
                else
                    dir=(--pid-dir "${COMP_WORDS[i+1]}")
                fi
                ;;
            --pid-dir=*) dir=(--pid-dir "${COMP_WORDS[i]#--pid-dir=}") ;;
        esac
    done
    "${COMP_WORDS[0]}" --list-names "${dir[@]}" 2>/dev/null
}

_rdaemon() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" i
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    for (( i = 1; i < COMP_CWORD; i++ )); do
        if [[ "${COMP_WORDS[i]}" == -- ]]; then
            if (( i + 1 == COMP_CWORD )); then
                COMPREPLY=( $(compgen -c -- "${cur}") )
            else
                COMPREPLY=( $(compgen -f -- "${cur}") )
            fi
            return 0
        fi
    done
    case "${prev}" in
        --name|--check|--status|--stop|--restart)
            if [[ "${cur}" != -* ]]; then
                COMPREPLY=( $(compgen -W "$(_rdaemon_names)" -- "${cur}") )
                return 0
            fi
            ;;
    esac
    _rdaemon_options "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _rdaemon -o nosort -o bashdefault -o default rdaemon
else
    complete -F _rdaemon -o bashdefault -o default rdaemon
fi
