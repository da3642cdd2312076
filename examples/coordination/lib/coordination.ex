defmodule Coordination do
  @moduledoc """
  The example agent coordination system that the beamops chapters run against.
  """

  @doc "The application version, from mix.exs."
  @spec version() :: String.t()
  def version do
    case Application.spec(:coordination, :vsn) do
      nil -> "unknown"
      vsn -> List.to_string(vsn)
    end
  end
end
