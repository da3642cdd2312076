defmodule Coordination.Work do
  @moduledoc """
  The coordination core: work items that agents claim, report progress on and
  complete.

  Each item is owned by one `Coordination.Work.Item` process, which handles
  every change to it in turn; that serialisation is what guarantees a single
  owner however many agents race to claim the same item. Items publish a
  snapshot to `Coordination.Work.Store` after each change, so listing and
  metrics never have to ask every process.
  """

  alias Coordination.Work.{Item, Store}

  @statuses ["pending", "claimed", "in_progress", "completed"]
  @max_text_bytes 10_000

  def statuses, do: @statuses

  @type error :: {:error, :bad_request | :not_found | :conflict | :unavailable, String.t()}

  @doc "Creates a pending item from `%{\"work_type\" => ..., \"description\" => ..., \"priority\" => ...}`."
  @spec create(map()) :: {:ok, map()} | error()
  def create(params) when is_map(params) do
    with {:ok, work_type} <- required_text(params, "work_type"),
         {:ok, description} <- optional_text(params, "description"),
         {:ok, priority} <- priority(params) do
      now = now()

      item = %{
        "id" => new_id(),
        "work_type" => work_type,
        "description" => description,
        "priority" => priority,
        "status" => "pending",
        "agent_id" => nil,
        "progress" => 0,
        "result" => nil,
        "created_at" => now,
        "updated_at" => now
      }

      case DynamicSupervisor.start_child(Coordination.Work.Supervisor, {Item, item}) do
        {:ok, _pid} -> {:ok, item}
        {:error, reason} -> {:error, :unavailable, "could not start work item: #{inspect(reason)}"}
      end
    end
  end

  def create(_params), do: {:error, :bad_request, "body must be a JSON object"}

  @spec claim(String.t(), map()) :: {:ok, map()} | error()
  def claim(id, params) do
    with {:ok, agent_id} <- agent_id(params), do: call(id, {:claim, agent_id})
  end

  @spec progress(String.t(), map()) :: {:ok, map()} | error()
  def progress(id, params) do
    with {:ok, agent_id} <- agent_id(params),
         {:ok, percent} <- percent(params),
         do: call(id, {:progress, agent_id, percent})
  end

  @spec complete(String.t(), map()) :: {:ok, map()} | error()
  def complete(id, params) do
    with {:ok, agent_id} <- agent_id(params),
         do: call(id, {:complete, agent_id, Map.get(params, "result")})
  end

  @spec get(String.t()) :: {:ok, map()} | error()
  def get(id) do
    case Store.get(id) do
      nil -> not_found(id)
      item -> {:ok, item}
    end
  end

  @doc "All items in creation order, optionally only those with `status`."
  @spec list(String.t() | nil) :: {:ok, [map()]} | error()
  def list(nil), do: {:ok, Store.list()}
  def list(status) when status in @statuses, do: {:ok, Enum.filter(Store.list(), &(&1["status"] == status))}

  def list(status),
    do: {:error, :bad_request, "unknown status #{inspect(status)}; expected one of #{Enum.join(@statuses, ", ")}"}

  defp call(id, message) do
    GenServer.call({:via, Registry, {Coordination.Work.Registry, id}}, message)
  catch
    :exit, {:noproc, _} -> not_found(id)
    :exit, {:normal, _} -> not_found(id)
    :exit, {:timeout, _} -> {:error, :unavailable, "work item #{id} did not answer in time"}
  end

  defp not_found(id), do: {:error, :not_found, "no work item with id #{inspect(id)}"}

  defp agent_id(params) when is_map(params), do: required_text(params, "agent_id")
  defp agent_id(_params), do: {:error, :bad_request, "body must be a JSON object"}

  defp required_text(params, key) do
    case Map.get(params, key) do
      text when is_binary(text) and text != "" and byte_size(text) <= @max_text_bytes -> {:ok, text}
      nil -> {:error, :bad_request, "#{key} is required"}
      _ -> {:error, :bad_request, "#{key} must be a non-empty string of at most #{@max_text_bytes} bytes"}
    end
  end

  defp optional_text(params, key) do
    case Map.get(params, key) do
      nil -> {:ok, ""}
      text when is_binary(text) and byte_size(text) <= @max_text_bytes -> {:ok, text}
      _ -> {:error, :bad_request, "#{key} must be a string of at most #{@max_text_bytes} bytes"}
    end
  end

  defp priority(params) do
    case Map.get(params, "priority") do
      nil -> {:ok, 0}
      value when is_integer(value) -> {:ok, value}
      _ -> {:error, :bad_request, "priority must be an integer"}
    end
  end

  defp percent(params) do
    case Map.get(params, "percent") do
      value when is_number(value) and value >= 0 and value <= 100 -> {:ok, value}
      nil -> {:error, :bad_request, "percent is required"}
      _ -> {:error, :bad_request, "percent must be a number from 0 to 100"}
    end
  end

  defp new_id do
    # Time-ordered and unique within the VM; the time prefix keeps ids from a
    # restarted node from repeating earlier ones.
    time = System.os_time(:microsecond) |> Integer.to_string(36)
    counter = System.unique_integer([:positive, :monotonic]) |> Integer.to_string(36)
    String.downcase("w" <> time <> counter)
  end

  @doc false
  def now, do: DateTime.utc_now() |> DateTime.truncate(:millisecond) |> DateTime.to_iso8601()
end
