defmodule Coordination.Work.Store do
  @moduledoc """
  Snapshots of all work items, for listing and metrics. Only an item's own
  process writes its row; this process just owns the table so it outlives
  any single item.
  """
  use GenServer

  @table :coordination_work_items

  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true, write_concurrency: true])
    {:ok, nil}
  end

  def put(%{"id" => id} = item) do
    # The sequence number is set once, at first insert, so listing keeps creation order.
    seq =
      case :ets.lookup(@table, id) do
        [{^id, seq, _}] -> seq
        [] -> System.unique_integer([:positive, :monotonic])
      end

    :ets.insert(@table, {id, seq, item})
    :ok
  end

  def get(id) do
    case :ets.lookup(@table, id) do
      [{^id, _seq, item}] -> item
      [] -> nil
    end
  end

  def list do
    @table |> :ets.tab2list() |> Enum.sort_by(fn {_id, seq, _item} -> seq end) |> Enum.map(fn {_, _, item} -> item end)
  end

  @doc "Items by status and the number of distinct agents owning an unfinished item."
  def counts do
    {by_status, agents} =
      :ets.foldl(
        fn {_id, _seq, item}, {by_status, agents} ->
          by_status = Map.update(by_status, item["status"], 1, &(&1 + 1))

          agents =
            if item["status"] in ["claimed", "in_progress"], do: MapSet.put(agents, item["agent_id"]), else: agents

          {by_status, agents}
        end,
        {%{}, MapSet.new()},
        @table
      )

    %{by_status: by_status, agents_active: MapSet.size(agents)}
  end
end
