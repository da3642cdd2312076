defmodule Coordination.Health do
  @moduledoc """
  Readiness: not ready while starting and while draining for shutdown; when a
  database is configured, ready only if a TCP connection to it succeeds.

  The database is probed in the background so `/health` answers at once even
  when the database host blackholes packets.
  """
  use GenServer

  @probe_interval_ms 2_000
  @probe_timeout_ms 1_000

  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Called once the whole supervision tree is up."
  # Kept outside this process's state so a restart of it does not send a
  # running app back to "starting".
  def mark_started, do: :persistent_term.put({__MODULE__, :started}, true)

  defp started?, do: :persistent_term.get({__MODULE__, :started}, false)

  @doc "Fails readiness from now on; the app keeps serving requests."
  # A persistent term: every response reads it (to send `connection: close`
  # while draining) and it changes at most once per VM lifetime.
  def mark_draining, do: :persistent_term.put({__MODULE__, :draining}, true)

  def draining?, do: :persistent_term.get({__MODULE__, :draining}, false)

  @doc false
  # For tests that drain and then carry on.
  def clear_draining, do: :persistent_term.erase({__MODULE__, :draining})

  @doc """
  The readiness report: `{ready?, status, db}` where status is one of
  `"ok" | "starting" | "draining" | "unavailable"` and db is one of
  `"ok" | "unavailable" | "not_configured"`.
  """
  def report, do: GenServer.call(__MODULE__, :report)

  @impl true
  def init(_opts) do
    target = database_target(Application.get_env(:coordination, :database_url))
    state = %{target: target, db: initial_db(target)}
    {:ok, state, {:continue, :probe}}
  end

  @impl true
  def handle_continue(:probe, state), do: {:noreply, probe(state)}

  @impl true

  def handle_call(:report, _from, state) do
    status =
      cond do
        draining?() -> "draining"
        not started?() -> "starting"
        state.db == "unavailable" -> "unavailable"
        true -> "ok"
      end

    {:reply, {status == "ok", status, state.db}, state}
  end

  @impl true
  def handle_info(:probe, state), do: {:noreply, probe(state)}

  defp probe(%{target: nil} = state), do: state

  defp probe(%{target: {host, port}} = state) do
    Process.send_after(self(), :probe, @probe_interval_ms)
    %{state | db: probe_tcp(host, port)}
  end

  defp probe_tcp(host, port) do
    case :gen_tcp.connect(host, port, [:binary, active: false], @probe_timeout_ms) do
      {:ok, socket} ->
        :gen_tcp.close(socket)
        "ok"

      {:error, _reason} ->
        "unavailable"
    end
  end

  defp initial_db(nil), do: "not_configured"
  defp initial_db(_target), do: "unavailable"

  @doc """
  The `{host, port}` to probe for a database URL such as
  `postgres://user:pass@db:5432/app` (port defaults to 5432), or nil when none.
  """
  def database_target(nil), do: nil

  def database_target(url) do
    case URI.parse(String.trim(url)) do
      %URI{host: host, port: port} when is_binary(host) and host != "" ->
        {String.to_charlist(host), port || 5432}

      _ ->
        # An unparseable URL is configured-but-unreachable, not "no database".
        {~c"invalid-database-url.invalid", 5432}
    end
  end
end
