{#- EMR encounters (FHIR Encounter), one row per encounter, placed at the org unit of the
    encounter's location (FHIR Location mapped to a DHIS2 org unit). -#}
select
    e.source_name,
    e.encounter_id as encounter_key,
    e.patient_id as patient_key,
    l.org_unit_id,
    e.start_date,
    e.started_at
from {{ ref('stg_fhir__encounter') }} as e
join {{ ref('stg_fhir__location') }} as l on l.source_name = e.source_name and l.location_id = e.location_id
where l.org_unit_id is not null
