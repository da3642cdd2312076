defmodule Coordination.Application do
  @moduledoc false
  use Application
  require Logger

  @impl true
  def start(_type, _args) do
    children = [
      Coordination.Metrics,
      Coordination.Health,
      {Registry, keys: :unique, name: Coordination.Work.Registry},
      Coordination.Work.Store,
      {DynamicSupervisor, name: Coordination.Work.Supervisor, strategy: :one_for_one},
      Coordination.HTTP.Listener,
      Coordination.Cluster
    ]

    with {:ok, pid} <- Supervisor.start_link(children, strategy: :one_for_one, name: Coordination.Supervisor) do
      if Application.get_env(:coordination, :install_signal_handler, true) do
        :ok = Coordination.Shutdown.install()
      end

      log_secret_status()
      Coordination.Health.mark_started()
      Logger.info("coordination #{Coordination.version()} listening on port #{Coordination.HTTP.Listener.port()}")
      {:ok, pid}
    end
  end

  defp log_secret_status do
    case Application.get_env(:coordination, :secret_key_base) do
      nil -> Logger.info("SECRET_KEY_BASE not set")
      secret -> Logger.info("SECRET_KEY_BASE set (#{byte_size(secret)} bytes)")
    end
  end
end
