-- Argo CD health of an ops.mdops.io Runbook, from the conditions the controller sets.
--   Progressing  until the run has finished (or while the status is older than the spec)
--   Healthy      Succeeded=True
--   Degraded     Succeeded=False (the run failed: exit code, reason and message in the status)
hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to accept the Runbook"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe the latest generation"
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Succeeded" then
    local message = condition.reason or ""
    if condition.message ~= nil and condition.message ~= "" then
      message = message .. ": " .. condition.message
    end
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.status == "False" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    hs.message = message
    return hs
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the run to finish"
return hs
