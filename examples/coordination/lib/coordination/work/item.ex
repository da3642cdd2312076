defmodule Coordination.Work.Item do
  @moduledoc """
  The one process that owns a work item. Every change goes through it, one
  message at a time, so two claims can never both see the item pending.
  """
  use GenServer, restart: :transient

  alias Coordination.Work.Store

  def start_link(%{"id" => id} = item) do
    GenServer.start_link(__MODULE__, item, name: {:via, Registry, {Coordination.Work.Registry, id}})
  end

  @impl true
  def init(%{"id" => id} = item) do
    # After a crash the supervisor restarts us with the original item; the
    # stored snapshot is the latest truth.
    item = Store.get(id) || item
    Store.put(item)
    {:ok, item}
  end

  @impl true
  def handle_call({:claim, agent_id}, _from, %{"status" => "pending"} = item) do
    commit(%{item | "status" => "claimed", "agent_id" => agent_id})
  end

  def handle_call({:claim, _agent_id}, _from, item) do
    {:reply, {:error, :conflict, "work item #{item["id"]} is #{item["status"]} (owner #{item["agent_id"]})"}, item}
  end

  def handle_call({:progress, agent_id, percent}, _from, item) do
    with :ok <- owned_and_open(item, agent_id) do
      commit(%{item | "status" => "in_progress", "progress" => percent})
    else
      error -> {:reply, error, item}
    end
  end

  def handle_call({:complete, agent_id, result}, _from, item) do
    with :ok <- owned_and_open(item, agent_id) do
      commit(%{item | "status" => "completed", "progress" => 100, "result" => result})
    else
      error -> {:reply, error, item}
    end
  end

  defp owned_and_open(%{"status" => status, "agent_id" => agent_id}, agent_id)
       when status in ["claimed", "in_progress"],
       do: :ok

  defp owned_and_open(%{"status" => "pending"} = item, _agent_id),
    do: {:error, :conflict, "work item #{item["id"]} has not been claimed"}

  defp owned_and_open(%{"status" => "completed"} = item, _agent_id),
    do: {:error, :conflict, "work item #{item["id"]} is already completed"}

  defp owned_and_open(item, agent_id),
    do: {:error, :conflict, "work item #{item["id"]} is owned by #{item["agent_id"]}, not #{agent_id}"}

  defp commit(item) do
    item = %{item | "updated_at" => Coordination.Work.now()}
    Store.put(item)
    {:reply, {:ok, item}, item}
  end
end
