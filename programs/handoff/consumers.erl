% The broker-side check of the handoff (components/handoff.py), an Erlang expression for
% `erl -eval` (programs/handoff/consumers.sh runs it in the RabbitMQ container). Asks the broker
% node every 20 ms for every consumer of the vhost (`rabbit_amqqueue:consumers_all`, the call
% behind `rabbitmqctl list_consumers`) until, on each work queue, the queue exists and every
% consumer has a consumer tag of the live color ("paper-trading-<live>-..."); with LIVE=none,
% until no work queue has a consumer.
%
% Environment: LIVE (color, or "none"), QUEUES (work queues, space-separated), VHOST, END_MS
% (deadline, epoch milliseconds); the broker node from the container's own RABBITMQ_NODENAME
% (default rabbit@<this host>). Prints one line per work queue
% (`queue=<name> exists=0|1 total=N blue=N green=N other=N`) of the last observation, then
% `result=ok` (exit 0), `result=timeout` (exit 4) or `result=error` with `error=<reason>` (exit 5).
Env = fun(K) -> case os:getenv(K) of false -> ""; V -> V end end,
[_, Host] = string:split(atom_to_list(node()), "@"),
Node = case Env("RABBITMQ_NODENAME") of
    "" -> list_to_atom("rabbit@" ++ Host);
    Name -> case lists:member($@, Name) of
        true -> list_to_atom(Name);
        false -> list_to_atom(Name ++ "@" ++ Host)
    end
end,
VHost = list_to_binary(Env("VHOST")),
Queues = [list_to_binary(Q) || Q <- string:lexemes(Env("QUEUES"), " ")],
Live = Env("LIVE"),
End = list_to_integer(Env("END_MS")),
Owner = fun(Tag) ->
    Of = [C || C <- ["blue", "green"], is_binary(Tag),
               string:prefix(Tag, "paper-trading-" ++ C ++ "-") =/= nomatch],
    case Of of [C | _] -> C; [] -> "other" end
end,
Call = fun(M, F, A) ->
    case rpc:call(Node, M, F, A, 5000) of {badrpc, Why} -> throw({broker, Why}); R -> R end
end,
Observe = fun() ->
    All = Call(rabbit_amqqueue, consumers_all, [VHost]),
    [begin
         Exists = case Call(rabbit_amqqueue, lookup, [{resource, VHost, queue, Q}]) of
             {ok, _} -> 1; {error, not_found} -> 0; Other -> throw({broker, Other})
         end,
         Owners = [Owner(proplists:get_value(consumer_tag, C)) || C <- All,
                   element(4, proplists:get_value(queue_name, C)) =:= Q],
         {Q, Exists, Owners}
     end || Q <- Queues]
end,
Held = fun(Seen) ->
    lists:all(fun({_, Exists, Owners}) ->
                  Exists =:= 1 andalso lists:all(fun(O) -> O =:= Live end, Owners)
              end, Seen)
end,
Count = fun(Who, Owners) -> length([O || O <- Owners, O =:= Who]) end,
Report = fun(Seen) ->
    [io:format("queue=~ts exists=~b total=~b blue=~b green=~b other=~b~n",
               [Q, E, length(Os), Count("blue", Os), Count("green", Os), Count("other", Os)])
     || {Q, E, Os} <- Seen]
end,
Loop = fun Loop(Last) ->
    Now = try {ok, Observe()} catch throw:{broker, Why} -> {error, Why} end,
    Late = os:system_time(millisecond) >= End,
    case Now of
        {ok, Seen} -> case Held(Seen) of
            true -> Report(Seen), io:format("result=ok~n"), halt(0);
            false when Late -> Report(Seen), io:format("result=timeout~n"), halt(4);
            false -> timer:sleep(20), Loop(Now)
        end;
        {error, Why2} when Late ->
            case Last of {ok, Seen2} -> Report(Seen2); _ -> ok end,
            io:format("error=~w~nresult=error~n", [Why2]), halt(5);
        {error, _} -> timer:sleep(100), Loop(case Last of {ok, _} -> Last; _ -> Now end)
    end
end,
Loop(none).
