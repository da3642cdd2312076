defmodule Coordination.HTTP.Listener do
  @moduledoc """
  The HTTP listener: a plain `:gen_tcp` socket and a small pool of acceptors.

  Each accepted connection gets its own process under
  `Coordination.HTTP.Connections`, so a slow or broken client only ever
  affects itself. Built on OTP alone because the app must build without Hex.
  """
  use GenServer
  require Logger

  @acceptors 8

  def child_spec(opts) do
    %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  def start_link(opts \\ []) do
    children = [
      {Task.Supervisor, name: Coordination.HTTP.Connections},
      %{id: :socket, start: {GenServer, :start_link, [__MODULE__, opts, [name: __MODULE__]]}}
    ]

    Supervisor.start_link(children, strategy: :rest_for_one, name: Coordination.HTTP.Supervisor)
  end

  @doc "The port actually bound (differs from the configured one when that is 0)."
  def port, do: GenServer.call(__MODULE__, :port)

  @doc """
  Closes the listening socket: new connections are refused while open ones
  finish. Used at the very end of a drain.
  """
  def stop_accepting, do: GenServer.call(__MODULE__, :stop_accepting)

  @impl true
  def init(_opts) do
    port = Application.fetch_env!(:coordination, :port)

    options = [:binary, packet: :raw, active: false, reuseaddr: true, backlog: 1024, nodelay: true]

    case :gen_tcp.listen(port, options) do
      {:ok, socket} ->
        for _ <- 1..@acceptors, do: spawn_link(fn -> accept_loop(socket) end)
        {:ok, %{socket: socket, port: elem(:inet.port(socket), 1)}}

      {:error, reason} ->
        {:stop, "cannot listen on port #{port}: #{:inet.format_error(reason)}"}
    end
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}

  def handle_call(:stop_accepting, _from, state) do
    :gen_tcp.close(state.socket)
    {:reply, :ok, state}
  end

  defp accept_loop(socket) do
    case :gen_tcp.accept(socket) do
      {:ok, client} ->
        hand_over(client)
        accept_loop(socket)

      {:error, :closed} ->
        :ok

      {:error, reason} ->
        # e.g. :emfile under a connection flood: back off instead of spinning.
        Logger.warning("accept failed: #{inspect(reason)}")
        Process.sleep(100)
        accept_loop(socket)
    end
  end

  defp hand_over(client) do
    case Task.Supervisor.start_child(Coordination.HTTP.Connections, fn -> wait_for_socket(client) end) do
      {:ok, pid} ->
        case :gen_tcp.controlling_process(client, pid) do
          :ok -> send(pid, {:socket_ready, client})
          {:error, _} -> Process.exit(pid, :kill)
        end

      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  defp wait_for_socket(client) do
    receive do
      {:socket_ready, ^client} -> Coordination.HTTP.Connection.serve(client)
    after
      5_000 -> :gen_tcp.close(client)
    end
  end
end
