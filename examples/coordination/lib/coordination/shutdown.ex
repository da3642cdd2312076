defmodule Coordination.Shutdown do
  @moduledoc """
  Graceful shutdown for rolling updates.

  OTP's default `erl_signal_handler` answers SIGTERM with an immediate
  `init:stop/0`, which would drop requests still being routed to this task
  while the Swarm routing mesh (or any load balancer) forgets it. Instead,
  `install/1` swaps in `Coordination.Shutdown.SignalHandler`, and SIGTERM
  starts `drain/1`:

    1. `/health` answers 503 (status "draining") and responses carry
       `connection: close`, so clients reconnect elsewhere;
    2. requests keep being served for `DRAIN_SECONDS` (default 5);
    3. the listening socket closes, requests already being answered finish
       (up to #{5} more seconds), and the VM stops cleanly with `System.stop/0`.
  """
  require Logger

  @in_flight_grace_ms 5_000
  @counter_table Coordination.Metrics

  @doc """
  Replaces the default SIGTERM behaviour with `drain/1`. Options are passed
  on to `drain/1`.
  """
  def install(opts \\ []) do
    case :gen_event.swap_handler(
           :erl_signal_server,
           {:erl_signal_handler, []},
           {Coordination.Shutdown.SignalHandler, opts}
         ) do
      :ok ->
        :ok

      {:error, _} ->
        # Already swapped (e.g. the app restarted inside the same VM): replace ours.
        :gen_event.delete_handler(:erl_signal_server, Coordination.Shutdown.SignalHandler, :reinstall)
        :gen_event.add_handler(:erl_signal_server, Coordination.Shutdown.SignalHandler, opts)
    end
  end

  @doc "Puts OTP's default signal handler back."
  def uninstall do
    :gen_event.swap_handler(
      :erl_signal_server,
      {Coordination.Shutdown.SignalHandler, :uninstall},
      {:erl_signal_handler, []}
    )
  end

  @doc """
  Runs the drain. Options (for tests): `:wait` replaces the pause of
  `drain_seconds`; `:stop` replaces `System.stop/0`.
  """
  def drain(opts \\ []) do
    drain_seconds =
      Keyword.get_lazy(opts, :drain_seconds, fn -> Application.get_env(:coordination, :drain_seconds, 5) end)

    wait = Keyword.get(opts, :wait, fn -> Process.sleep(drain_seconds * 1_000) end)
    stop = Keyword.get(opts, :stop, &System.stop/0)

    try do
      Coordination.Health.mark_draining()
      Logger.info("SIGTERM received: failing /health, serving for #{drain_seconds}s before stopping")
      wait.()
      Coordination.HTTP.Listener.stop_accepting()
      remaining = wait_for_in_flight(System.monotonic_time(:millisecond) + @in_flight_grace_ms)
      Logger.info("drain finished (#{remaining} requests still in flight); stopping")
    after
      stop.()
    end
  end

  def request_started, do: :ets.update_counter(@counter_table, :in_flight, 1, {:in_flight, 0})
  def request_finished, do: :ets.update_counter(@counter_table, :in_flight, -1, {:in_flight, 0})

  def in_flight do
    case :ets.lookup(@counter_table, :in_flight) do
      [{:in_flight, count}] -> count
      [] -> 0
    end
  end

  defp wait_for_in_flight(deadline) do
    count = in_flight()

    if count > 0 and System.monotonic_time(:millisecond) < deadline do
      Process.sleep(20)
      wait_for_in_flight(deadline)
    else
      count
    end
  end
end

defmodule Coordination.Shutdown.SignalHandler do
  @moduledoc """
  A `:gen_event` handler on `:erl_signal_server`. SIGTERM starts the drain;
  the other signals keep OTP's default behaviour.
  """
  @behaviour :gen_event
  require Logger

  @impl true
  # From swap_handler/3 the argument comes paired with the old handler's result.
  def init({opts, _swapped_from}) when is_list(opts), do: {:ok, %{opts: opts, draining: false}}
  def init(opts) when is_list(opts), do: {:ok, %{opts: opts, draining: false}}

  @impl true
  def handle_event(:sigterm, %{draining: true} = state) do
    Logger.info("SIGTERM received again: already draining")
    {:ok, state}
  end

  def handle_event(:sigterm, state) do
    # The drain sleeps; it must not block the signal server.
    spawn(fn -> Coordination.Shutdown.drain(state.opts) end)
    {:ok, %{state | draining: true}}
  end

  def handle_event(:sigusr1, _state), do: :erlang.halt(~c"Received SIGUSR1")
  def handle_event(:sigquit, _state), do: :erlang.halt()
  def handle_event(_signal, state), do: {:ok, state}

  @impl true
  def handle_call(_request, state), do: {:ok, :ok, state}

  @impl true
  def handle_info(_message, state), do: {:ok, state}

  @impl true
  def terminate(_reason, _state), do: :ok
end
