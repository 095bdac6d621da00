#!/bin/sh
# The handoff's second step, run in the RabbitMQ container by one exec (release/handoff.py,
# `hand_over`): one small Erlang node evaluates $PROBE (programs/handoff/consumers.erl, handed
# over in the environment with its own parameters: LIVE, QUEUES, VHOST, END_MS). The node is
# hidden (not a cluster member), has a name unique in the container and the cookie from
# $HOME/.erlang.cookie as rabbitmqctl reads it; a single scheduler: it only waits.
set -u
exec erl -sname "paper-trading-handoff-$$" -hidden -noshell -noinput -boot start_clean \
    +S 1:1 +A 0 -eval "$PROBE"
