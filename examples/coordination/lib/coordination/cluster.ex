defmodule Coordination.Cluster do
  @moduledoc """
  DNS-based clustering (chapter 09) without libcluster.

  When `CLUSTER_DNS_QUERY` is set (e.g. `tasks.coordination` under Docker
  Swarm), it is resolved with `:inet_res` every `CLUSTER_POLL_SECONDS`
  (default 5) and every `<CLUSTER_NODE_BASENAME>@<ip>` found is connected
  with `Node.connect/1`. Polling forever means a replaced node re-joins.
  Needs a distributed node (`RELEASE_DISTRIBUTION=name`, a shared
  `RELEASE_COOKIE`).
  """
  use GenServer
  require Logger

  def start_link(opts \\ []) do
    query = Keyword.get_lazy(opts, :query, fn -> Application.get_env(:coordination, :cluster_dns_query) end)

    if query in [nil, ""] do
      :ignore
    else
      GenServer.start_link(__MODULE__, Keyword.put(opts, :query, query), name: __MODULE__)
    end
  end

  @impl true
  def init(opts) do
    state = %{
      query: Keyword.fetch!(opts, :query),
      basename:
        Keyword.get_lazy(opts, :basename, fn ->
          Application.get_env(:coordination, :cluster_node_basename, "coordination")
        end),
      interval_ms:
        Keyword.get_lazy(opts, :interval_ms, fn ->
          Application.get_env(:coordination, :cluster_poll_seconds, 5) * 1_000
        end),
      resolve: Keyword.get(opts, :resolve, &resolve/1),
      connect: Keyword.get(opts, :connect, &Node.connect/1),
      require_distribution: Keyword.get(opts, :require_distribution, true),
      warned: false
    }

    {:ok, state, {:continue, :poll}}
  end

  @impl true
  def handle_continue(:poll, state), do: {:noreply, poll(state)}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}

  defp poll(state) do
    Process.send_after(self(), :poll, state.interval_ms)

    if Node.alive?() or not state.require_distribution do
      connect_all(state.query, state.basename, state.resolve, state.connect)
      state
    else
      unless state.warned do
        Logger.warning("CLUSTER_DNS_QUERY is set but this node is not distributed (set RELEASE_DISTRIBUTION=name)")
      end

      %{state | warned: true}
    end
  end

  @doc """
  Resolves `query` and connects to every peer not yet connected. Returns the
  peer node names found (without this node).
  """
  def connect_all(query, basename, resolve \\ &resolve/1, connect \\ &Node.connect/1) do
    peers = query |> resolve.() |> node_names(basename) |> Enum.reject(&(&1 == node()))
    connected = Node.list()

    for peer <- peers, peer not in connected do
      case connect.(peer) do
        true -> Logger.info("cluster: connected to #{peer}")
        _ -> Logger.debug("cluster: could not connect to #{peer}")
      end
    end

    peers
  end

  @doc "Node names `<basename>@<ip>` for resolved addresses."
  def node_names(ips, basename) do
    ips
    |> Enum.map(fn ip -> :"#{basename}@#{:inet.ntoa(ip)}" end)
    |> Enum.uniq()
    |> Enum.sort()
  end

  @doc "IPv4 addresses for `query`, or [] when it does not resolve."
  def resolve(query), do: :inet_res.lookup(String.to_charlist(query), :in, :a)
end
